"""Pieces of a trial that need no database: its summary when stopped early, and the paths it may open."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.core.datapaths import confine
from server.core.exceptions import PathEscapeError
from worker.engine.summary import history_summary


def test_partial_figures_of_a_pruned_trial() -> None:
    history = [
        {"train_acc": 0.3, "val_acc": 0.4, "val_loss": 1.5, "epoch_seconds": 1.0, "images_per_second": 100.0},
        {"train_acc": 0.6, "val_acc": 0.7, "val_loss": 1.0, "epoch_seconds": 3.0, "images_per_second": 300.0},
        {"train_acc": 0.8, "val_acc": 0.65, "val_loss": 1.1, "epoch_seconds": 2.0, "images_per_second": 200.0},
    ]
    summary = history_summary(history)
    assert summary == {
        "best_val_acc": 0.7, "best_epoch": 2.0, "final_train_acc": 0.8, "final_val_acc": 0.65, "final_val_loss": 1.1,
        "seconds_per_epoch": 2.0, "median_images_per_second": 200.0,
    }
    assert history_summary([]) == {}
    assert history_summary([{"val_acc": float("nan")}]) == {}


def test_spec_paths_stay_inside_their_root(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    assert confine(tmp_path, "weights/vit.pt", "model.pretrained") == (tmp_path / "weights" / "vit.pt").resolve()
    for bad in ("/etc/passwd", "../outside.pt", "weights/../../outside.pt"):
        with pytest.raises(PathEscapeError):
            confine(tmp_path, bad, "model.pretrained")
