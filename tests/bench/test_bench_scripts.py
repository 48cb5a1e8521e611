"""The benchmark scripts run end to end in their small CPU modes and print their figures.

Speed is measured by running the scripts (see bench/RESULTS.md), never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSWEEP_")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


@pytest.mark.slow
def test_control_plane_prints_its_figures(tmp_path: Path) -> None:
    out = _run("bench/control_plane.py", "--backend", "sqlite", "--trials", "20", "--workers", "2",
               "--json", str(tmp_path / "cp.json"))
    for text in ("trials by state", "{'completed': 20}", "gap (store) s", "full gap (worker) s", "trials/s",
                 "optuna create trial", "optuna suggest", "mlflow log_epoch", "logging: MLflow log_epoch + heartbeat", "goals:"):
        assert text in out, out
    (res,) = json.loads((tmp_path / "cp.json").read_text())
    assert res["states"] == {"completed": 20}
    assert 0 <= res["gap_median_s"] < 60 and res["gap_ratio"] > 0 and res["trials_per_s"] > 0


@pytest.mark.slow
def test_gpu_sweep_runs_tiny_on_cpu(tmp_path: Path) -> None:
    out = _run("bench/gpu_sweep.py", "--device", "cpu", "--tiny", "--trials", "2", "--slots", "1",
               "--json", str(tmp_path / "gs.json"))
    for text in ("(a) studies' way", "(b) service, 1 slot(s)", "images/s", "trials/h", "GPU util", "MFU",
                 "ratio (b)/(a)"):
        assert text in out, out
    res = json.loads((tmp_path / "gs.json").read_text())
    a, b = res["tiny"]
    assert a["trials"] == b["trials"] == 2
    assert a["train_images"] == b["train_images"] == 2 * 200  # the same data and epochs on both sides
    assert a["images_per_s"] > 0 and b["images_per_s"] > 0


def test_augment_bench_prints_every_preset_side_by_side() -> None:
    out = _run("bench/augment.py", "--batch", "16", "--repeats", "1", timeout=120)
    assert "hand-written img/s" in out and "kornia / hand" in out, out
    for name in ("standard (kornia)", "standard", "cutout", "colorjitter_flip", "randomresizedcrop", "trivialaugment",
                 "perceiver"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), (name, out)
