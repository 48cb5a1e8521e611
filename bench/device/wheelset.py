"""The wheels the GPU machine lacks: vitsweep's runtime dependencies at the versions this environment resolved.

Run with the project's virtual environment (``.venv/bin/python bench/device/wheelset.py``): it walks the
``Requires-Dist`` graph of the installed ``vitsweep`` distribution, with markers evaluated for CPython 3.12 on
x86-64 Linux (the device's Python), and prints one ``name==version`` per line, the version being the one
installed here, so the list follows ``pyproject.toml`` through whatever pip resolved.

Two cuts keep the set small enough to travel (64 MiB with the working tree):

- The device image's scientific stack (``DEVICE_STACK``: torch, torchvision, timm, numpy, scipy, scikit-learn,
  matplotlib, pandas, pyarrow, pillow, pyyaml, markupsafe) comes from the device and is never carried: carrying
  it would replace the CUDA build of torch, and it is hundreds of MiB. The walk stops at these names, so what
  only they need (sympy, networkx, huggingface_hub, the nvidia-* libraries, ...) is not carried either.
- ``SWAPS`` and ``DROPS`` replace or leave out what the code that the check runs never imports (the MLflow
  server and UI, PostgreSQL's driver, Optuna's dashboard); each entry says why.

Everything else on the walk travels at our pin, also the small pure-Python packages the device has at some
other version (click, rich, requests, typing-extensions, ...): the install puts them first on the path, so
the check runs the versions the tests ran here.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from collections.abc import Iterable

from packaging.markers import Marker
from packaging.requirements import Requirement

# The device image's packages that vitsweep needs and that must come from the image (see
# ../.library/device/KINDS.md in the workplace): the CUDA build of torch and the compiled scientific stack.
DEVICE_STACK: frozenset[str] = frozenset({
    "torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "matplotlib", "pandas", "pyarrow",
    "pillow", "pyyaml", "markupsafe",
})

# name -> what stands in for it on the device.
SWAPS: dict[str, tuple[str, ...]] = {
    # The full ``mlflow`` wheel adds the tracking server's web UI (7 MiB of JavaScript) and the server's own
    # dependencies (Flask, gunicorn, graphene, docker, cryptography, ...). vitsweep only uses MlflowClient with
    # a sqlite:/// store, whose code (the SQLAlchemy store and its migrations) is in mlflow-skinny; that store
    # imports cryptography, which the full wheel lists and skinny does not.
    "mlflow": ("mlflow-skinny", "cryptography"),
}

# name -> why it does not travel. Its own dependencies are not walked either (unless something else needs them).
DROPS: dict[str, str] = {
    "optuna-dashboard": "the dashboard UI (`vitsweep up`), which the check does not start",
    "psycopg": "PostgreSQL's driver: the check uses SQLite",
    "psycopg-binary": "PostgreSQL's driver: the check uses SQLite",
    "gitpython": "MLflow tags runs with the git commit when it can import git; it is optional",
}

# Markers are evaluated for the device's interpreter, not this one.
TARGET_ENV: dict[str, str] = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "implementation_version": "3.12.3", "os_name": "posix",
    "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "extra": "",
}


def canonical(name: str) -> str:
    """PEP 503 normalised name: ``Pydantic_Core`` -> ``pydantic-core``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: md.Distribution, env: dict[str, str]) -> list[str]:
    """The names ``dist`` needs on the target, extras and other platforms left out."""
    names = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        names.append(canonical(req.name))
    return names


def wheel_set(root: str = "vitsweep", *, env: dict[str, str] | None = None,
              stack: Iterable[str] = DEVICE_STACK) -> dict[str, str]:
    """``{name: version}`` of what must travel for ``root`` to run on the device.

    Raises:
        LookupError: a package the target needs is not installed here, so its version is unknown.
    """
    env = dict(TARGET_ENV if env is None else env)
    Marker("python_version >= '3'").evaluate(env)  # fails early on an incomplete environment
    stack = {canonical(n) for n in stack}
    carried: dict[str, str] = {}
    seen: set[str] = set()
    todo = list(_requirements(md.distribution(root), env))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in stack or name in DROPS:
            continue
        if name in SWAPS:
            todo.extend(SWAPS[name])
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise LookupError(f"{name} is needed on the device (Python 3.12) but not installed here, so its "
                              "version is unknown; install it into .venv or list it in DROPS") from None
        carried[name] = dist.version
        todo.extend(_requirements(dist, env))
    return dict(sorted(carried.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="vitsweep", help="The installed distribution whose needs are walked")
    parser.add_argument("--why", action="store_true", help="Also print what is left to the device and dropped")
    args = parser.parse_args(argv)
    try:
        carried = wheel_set(args.root)
    except (LookupError, md.PackageNotFoundError) as exc:
        print(f"wheelset: {exc}", file=sys.stderr)
        return 1
    for name, version in carried.items():
        print(f"{name}=={version}")
    if args.why:
        print(f"# from the device: {', '.join(sorted(DEVICE_STACK))}", file=sys.stderr)
        for name, why in DROPS.items():
            print(f"# dropped {name}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
