#!/usr/bin/env bash
# Download, here, the CPython 3.12 x86-64 Linux wheels of every dependency the GPU machine lacks, pinned to the
# versions in .venv (bench/device/wheelset.py says which and why), into .whl/ (git-ignored), and print their
# size with the working tree's: both travel to the device, 64 MiB together at most.
#
#   bash bench/device/wheels.sh           # download into .whl/ (replacing what is there) and measure
#   bash bench/device/wheels.sh --list    # only print the pinned name==version lines; no network
#   bash bench/device/wheels.sh --dest DIR
#   bash bench/device/wheels.sh --python-version 3.11 --dest .whl311   # a rehearsal with this machine's Python
#
# PYTHON (default .venv/bin/python) is the environment whose versions are pinned; its pip downloads.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-.venv/bin/python}
DEST=.whl
LIST=0
PYVER=3.12  # the device's Python
LIMIT_MIB=64
while [ $# -gt 0 ]; do
  case "$1" in
    --list) LIST=1 ;;
    --dest) DEST=${2:?--dest needs a folder}; shift ;;
    --python-version) PYVER=${2:?--python-version needs X.Y}; shift ;;
    *) echo "wheels.sh: unknown argument '$1'; use --list, --dest DIR or --python-version X.Y" >&2; exit 2 ;;
  esac
  shift
done
if [ ! -x "$PY" ]; then
  echo "wheels.sh: no Python at PYTHON=$PY; create .venv first (see the README)" >&2
  exit 2
fi

PINS=$("$PY" bench/device/wheelset.py)
if [ "$LIST" = 1 ]; then
  echo "$PINS"
  exit 0
fi

# pip matches manylinux tags exactly: name every glibc from 2.17 (manylinux2014) to the device's 2.39.
PLATFORMS=(--platform manylinux1_x86_64 --platform manylinux2014_x86_64)
for n in $(seq 17 39); do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done

rm -rf "$DEST"
mkdir -p "$DEST"
# shellcheck disable=SC2086  # one argument per pin
# (This machine's pip configuration may name local indexes that do not exist; their warnings are dropped.)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --abi "cp${PYVER/./}" --abi abi3 --abi none "${PLATFORMS[@]}" -d "$DEST" $PINS \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

"$PY" - "$DEST" "$LIMIT_MIB" <<'EOF'
"""Sizes: the wheels, the working tree that travels with them (tracked and untracked-not-ignored files)."""
import subprocess, sys
from pathlib import Path

dest, limit = Path(sys.argv[1]), float(sys.argv[2])
wheels = sorted(dest.glob("*.whl"))
for w in sorted(wheels, key=lambda p: p.stat().st_size, reverse=True):
    print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], check=True,
                       capture_output=True).stdout.decode().split("\0")
tree = sum(Path(n).stat().st_size for n in names if n and Path(n).is_file())
whl = sum(w.stat().st_size for w in wheels)
total = (tree + whl) / 2**20
print(f"wheels: {len(wheels)} files, {whl / 2**20:.1f} MiB; working tree: {tree / 2**20:.1f} MiB; "
      f"together {total:.1f} MiB of the {limit:.0f} MiB that may travel")
if total > limit:
    sys.exit(f"wheels.sh: {total:.1f} MiB is over the {limit:.0f} MiB limit")
EOF
