#!/usr/bin/env bash
# The GPU check in one call (see bench/device/check.py for the steps and what comes back).
#
# On the GPU machine, with .whl/ carried (bash bench/device/wheels.sh, here, fills it):
#   bash bench/device/check.sh                          # 8 minutes at most; results in $OUT
#   bash bench/device/check.sh --steps sweep --budget 270
# Here, without a GPU (what CI runs):
#   OUT=/tmp/check bash bench/device/check.sh --device cpu --tiny
#
# Where the Python lacks vitsweep's dependencies (a bare GPU machine), the wheels in .whl/ are installed into
# a folder of their own (CHECK_SITE, default /tmp/vitsweep-site) that goes first on PYTHONPATH: the device's
# torch is never replaced, and vitsweep runs from this tree. CHECK_WHEELS names another wheel folder (a
# rehearsal here). Other arguments go to check.py.
set -uo pipefail
cd "$(dirname "$0")/../.."
STARTED=$(date +%s.%N)

if [ -z "${OUT:-}" ]; then
  echo "check.sh: set OUT to the folder the results go to" >&2
  exit 2
fi
mkdir -p "$OUT"
LOG="$OUT/check.log"
: > "$LOG"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi

if ! "$PY" -c "import optuna, mlflow, fastapi, pydantic_settings, kornia" 2>/dev/null; then
  SITE=${CHECK_SITE:-/tmp/vitsweep-site}
  shopt -s nullglob
  WHEELS=("${CHECK_WHEELS:-.whl}"/*.whl)
  if [ ${#WHEELS[@]} -eq 0 ]; then
    echo "check.sh: $PY lacks vitsweep's dependencies and .whl/ holds no wheels; run bench/device/wheels.sh here" \
      "and carry .whl" | tee -a "$LOG" >&2
    exit 2
  fi
  echo "installing ${#WHEELS[@]} wheels into $SITE" | tee -a "$LOG"
  t0=$(date +%s)
  # --no-deps: the set is complete by construction (wheelset.py); --target: beside the device's packages.
  if ! timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --disable-pip-version-check --target "$SITE" "${WHEELS[@]}" >> "$LOG" 2>&1; then
    echo "check.sh: installing the wheels failed; see $LOG" | tee -a "$LOG" >&2
  fi
  echo "installed in $(( $(date +%s) - t0 ))s" | tee -a "$LOG"
  export CHECK_SITE=$SITE
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

PYTHONUNBUFFERED=1 "$PY" bench/device/check.py --out "$OUT" --started "$STARTED" "$@" 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
