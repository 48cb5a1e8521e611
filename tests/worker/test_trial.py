"""Pieces of the trial runner that need no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.exceptions import PermanentTrialError
from worker.trial import _confined, _partial_figures


def test_partial_figures_of_a_pruned_trial() -> None:
    history = [
        {"train_acc": 0.3, "val_acc": 0.4, "val_loss": 1.5, "epoch_seconds": 1.0, "images_per_second": 100.0},
        {"train_acc": 0.6, "val_acc": 0.7, "val_loss": 1.0, "epoch_seconds": 3.0, "images_per_second": 300.0},
        {"train_acc": 0.8, "val_acc": 0.65, "val_loss": 1.1, "epoch_seconds": 2.0, "images_per_second": 200.0},
    ]
    figures = _partial_figures(history)
    assert figures == {
        "best_val_acc": 0.7, "best_epoch": 2.0, "final_train_acc": 0.8, "final_val_loss": 1.1,
        "seconds_per_epoch": 2.0, "images_per_second": 200.0,
    }
    assert _partial_figures([]) == {}
    assert _partial_figures([{"val_acc": float("nan")}]) == {}


def test_spec_paths_stay_inside_their_root(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    assert _confined(tmp_path, "weights/vit.pt") == (tmp_path / "weights" / "vit.pt").resolve()
    for bad in ("/etc/passwd", "../outside.pt", "weights/../../outside.pt"):
        with pytest.raises(PermanentTrialError):
            _confined(tmp_path, bad)
