"""The GPU check kit (bench/device) runs end to end in its CPU mode, cuts a hanging step at its time box, and
lists the wheels the GPU machine needs without downloading them.

The GPU run itself happens on a lent GPU machine (README, "Benchmarks"); here only that the kit works. No figure
of speed is asserted.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "bench" / "device"
sys.path.insert(0, str(ROOT / "bench"))
from device import steps, wheelset  # noqa: E402

STEPS = ["env", "cuda_tests", "models", "vit_s", "fast_path", "sweep"]


def _env(out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSWEEP_")}
    env.update({"OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    return env


def _check(out: Path, *argv: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = subprocess.run(["bash", str(CHECK / "check.sh"), *argv], cwd=ROOT, env=_env(out), capture_output=True,
                            text=True, timeout=timeout)
    return result, json.loads((out / "results.json").read_text())


def _gone(pid: int) -> bool:
    """Killed: no such process, or a zombie nobody has reaped yet (a container's init may not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


@pytest.mark.slow
def test_cpu_mode_runs_every_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result, res = _check(out, "--device", "cpu", "--tiny", "--work", str(tmp_path / "work"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert list(res["steps"]) == STEPS
    for name, step in res["steps"].items():
        assert step["status"] == "ok", (name, step["log_tail"])
        assert step["seconds"] > 0 and step["box_s"] > 0 and step["log_tail"]

    env = res["steps"]["env"]["figures"]
    assert env["torch"] and env["cuda_available"] is False
    assert set(env["imports"]) == set(steps.CARRIED_IMPORTS)
    assert not [v for v in env["imports"].values() if v.startswith("ERROR")]

    tests = res["steps"]["cuda_tests"]["figures"]
    assert tests["files"] == ["tests/worker/test_augment.py", "tests/worker/test_engine_parts.py"]
    assert tests["collected"] == tests["skipped"] >= 8 and tests["failed"] == 0  # skipped without a GPU

    from vitmodels import list_models

    models = res["steps"]["models"]["figures"]["models"]
    assert list(models) == list_models()
    for name, row in models.items():
        assert row["finite"] and row["images_per_s"] > 0 and row["param_count"] > 0, (name, row)

    vit_s = res["steps"]["vit_s"]["figures"]
    assert {"mfu", "mfu_last_epoch", "flops_per_image", "images_per_s", "peak_memory_mib", "epochs"} <= set(vit_s)
    assert vit_s["mfu"] is None and vit_s["flops_per_image"] > 0  # no MFU without a known GPU

    rows = res["steps"]["fast_path"]["figures"]["rows"]
    assert [r["row"] for r in rows] == [label for label, _ in steps.FAST_PATH]
    measured = [r for r in rows if "skipped" not in r]
    assert len(measured) == 5  # the compiled rows run on the GPU only
    for r in measured:
        assert r["images_per_s"] > 0 and 0 <= r["data_wait"] < 1, r
    assert measured[0]["switches"]["data_on_device"] is False and measured[-1]["switches"]["data_on_device"] is True

    sides = res["steps"]["sweep"]["figures"]["tiny"]
    assert [s["name"] for s in sides] == ["(a) studies' way", "(b) service, 1 slot(s)", "(b) service, auto slot(s)"]
    assert all(s["trials"] == 2 and s["images_per_s"] > 0 for s in sides)
    assert "sweep_ratio" in res["summary"] and "data_wait" in res["summary"]

    # What comes back from the GPU machine: a few plain files, the logs packed in one.
    names = sorted(p.name for p in out.iterdir())
    assert names == ["check.log", "logs.tar.gz", "results.json"]
    assert "done:" in (out / "check.log").read_text()
    with tarfile.open(out / "logs.tar.gz") as tar:
        packed = tar.getnames()
    assert {f"logs/{s}.log" for s in STEPS} <= set(packed)
    assert any(n.startswith("sweep/service-tiny-1/") and n.endswith("worker.log") for n in packed)


@pytest.mark.slow
def test_a_hanging_step_is_cut_at_its_time_box_and_the_next_still_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # The box leaves the step's process time to start and report its child on a loaded machine (3 s did not).
    result, res = _check(out, "--device", "cpu", "--tiny", "--steps", "hang,env", "--box", "hang=15", timeout=300)
    assert result.returncode == 1  # not every step ok
    hang, env = res["steps"]["hang"], res["steps"]["env"]
    assert hang["status"] == "timeout" and hang["rc"] is None and hang["box_s"] == 15 and hang["seconds"] >= 15
    assert hang["figures"]["child_pid"] > 0  # what it wrote before the box is reported
    assert _gone(hang["figures"]["child_pid"])  # its child, in a process group of its own, was killed too
    assert env["status"] == "ok" and env["figures"]["torch"]

    # With less left of the budget than a step needs to start, it is skipped, and the results say so.
    result, res = _check(tmp_path / "late", "--device", "cpu", "--tiny", "--steps", "env", "--budget", "12",
                         timeout=120)
    assert result.returncode == 1 and res["steps"]["env"]["status"] == "skipped"


def test_check_rejects_unknown_steps_and_boxes(tmp_path: Path) -> None:
    for argv, message in ((["--steps", "env,nope"], "unknown step"), (["--box", "env=0"], "must be positive"),
                          (["--box", "nope=3"], "names a step"), (["--device", "gpu"], "cpu or cuda:N")):
        result = subprocess.run([sys.executable, str(CHECK / "check.py"), "--out", str(tmp_path), *argv],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, (argv, result.stderr)


def test_wheels_list_pins_what_the_device_lacks() -> None:
    result = subprocess.run(["bash", str(CHECK / "wheels.sh"), "--list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    pins = dict(line.split("==") for line in result.stdout.split())
    # Pinned to what this environment resolved from pyproject.toml.
    assert all(md.version(name) == version for name, version in pins.items())
    assert {"optuna", "mlflow-skinny", "cryptography", "sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn",
            "pydantic", "pydantic-core", "pydantic-settings", "typer", "cmaes", "kornia", "kornia-rs", "perceiver-pytorch",
            "transformer-in-transformer", "einops", "httpx"} <= set(pins)
    # Never the device's own stack (torch above all), nor what the check does not import.
    assert not set(pins) & (wheelset.DEVICE_STACK | {"mlflow", "optuna-dashboard", "psycopg", "psycopg-binary"})
    # CUDA's libraries come with the device's torch; nvidia-ml-py is NVML's pure-Python binding (GPU system metrics)
    assert not [n for n in pins if n.startswith(("nvidia-", "cuda-", "triton")) and n != "nvidia-ml-py"]


def test_wheel_set_follows_markers_for_the_device_python() -> None:
    """Markers are read for CPython 3.12 on Linux, whatever Python runs the walk."""
    pins = wheelset.wheel_set()
    assert "colorama" not in pins  # typer's Windows-only dependency
    assert all(re.fullmatch(r"[a-z0-9-]+", name) for name in pins)


def test_gpu_sweep_runs_the_cli_module_where_vitsweep_is_not_installed(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import gpu_sweep

    python = sys.executable
    assert gpu_sweep.vitsweep_command()[0].endswith("vitsweep")  # this environment has the console script
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))  # the GPU machine's Python has none
    assert gpu_sweep.vitsweep_command() == [str(tmp_path / "python3"), "-m", "server.cli"]
    result = subprocess.run([python, "-m", "server.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "worker" in result.stdout
