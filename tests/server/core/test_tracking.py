"""Per-epoch metrics sent from a background thread: in order, with their steps, flushed before a run ends,
and failures logged rather than raised into training. Against a real MLflow store (SQLite)."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from server.core.tracking import Tracker
from tests.conftest import Templates


@pytest.fixture
def tracker(tmp_path: Path, templates: Templates) -> Tracker:
    shutil.copyfile(templates.mlflow, tmp_path / "mlflow.db")
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "bg", tmp_path / "artifacts")
    t.start_background()
    return t


def _trial_run(t: Tracker) -> str:
    parent = t.start_sweep(1, "bg", {"dataset": {"name": "synthetic"}, "model": {"name": "cnn"}}, "study")
    return t.start_trial(parent, 1, 0, "bg#1/0", {"train": {"lr": 0.1}}, {"train.lr": 0.1})


def test_metrics_arrive_in_order_with_their_steps(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = _trial_run(tracker)
    sent: list[int] = []
    real = tracker.client.log_batch

    def spy(run_id: str, metrics=(), **kwargs):  # type: ignore[no-untyped-def]
        if metrics:
            sent.append(metrics[0].step)
        time.sleep(0.005)  # slower than the producer: the queue fills up
        return real(run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", spy)
    for epoch in range(1, 31):
        tracker.log_epoch(run_id, epoch, {"val_acc": epoch / 100, "train_loss": 1 / epoch, "skipped": None})  # type: ignore[dict-item]
    assert tracker.flush(timeout=60)
    assert sent == list(range(1, 31))
    history = tracker.client.get_metric_history(run_id, "val_acc")
    assert sorted((m.step, m.value) for m in history) == [(e, e / 100) for e in range(1, 31)]
    assert len(tracker.client.get_metric_history(run_id, "train_loss")) == 30


def test_log_epoch_returns_at_once_and_flush_waits(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = _trial_run(tracker)
    release = threading.Event()
    real = tracker.client.log_batch

    def blocked(run_id: str, metrics=(), **kwargs):  # type: ignore[no-untyped-def]
        release.wait(30)
        return real(run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", blocked)
    start = time.perf_counter()
    for epoch in range(1, 6):
        tracker.log_epoch(run_id, epoch, {"val_acc": 0.5})
    assert time.perf_counter() - start < 1.0  # nothing waited on the store
    assert tracker.flush(timeout=0.2) is False  # still blocked
    threading.Timer(0.3, release.set).start()
    assert tracker.flush(timeout=60) is True
    assert len(tracker.client.get_metric_history(run_id, "val_acc")) == 5


def test_finish_trial_flushes_first(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = _trial_run(tracker)
    real = tracker.client.log_batch

    def slow(run_id: str, metrics=(), **kwargs):  # type: ignore[no-untyped-def]
        if metrics:
            time.sleep(0.05)
        return real(run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", slow)
    for epoch in range(1, 6):
        tracker.log_epoch(run_id, epoch, {"val_acc": epoch / 10})
    tracker.finish_trial(run_id, "completed")
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val_acc"] == 0.5
    assert len(tracker.client.get_metric_history(run_id, "val_acc")) == 5


def test_failures_are_logged_not_raised(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = _trial_run(tracker)
    real = tracker.client.log_batch
    monkeypatch.setattr("server.core.tracking.time.sleep", lambda _s: None)  # no back-off pauses in the test

    def flaky(run_id: str, metrics=(), **kwargs):  # type: ignore[no-untyped-def]
        if metrics and metrics[0].step == 2:
            raise RuntimeError("tracking store down")
        return real(run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", flaky)
    with caplog.at_level(logging.WARNING, logger="server.core.tracking"):
        for epoch in (1, 2, 3):
            tracker.log_epoch(run_id, epoch, {"val_acc": epoch / 10})  # never raises
        assert tracker.flush(timeout=60)
    assert [m.step for m in tracker.client.get_metric_history(run_id, "val_acc")] == [1, 3]
    assert "dropped 1 metric(s)" in caplog.text and "step 2" in caplog.text


def test_without_background_log_epoch_is_synchronous(tmp_path: Path) -> None:
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "sync", tmp_path / "artifacts")
    run_id = _trial_run(t)
    t.log_epoch(run_id, 1, {"val_acc": 0.25})
    assert [m.value for m in t.client.get_metric_history(run_id, "val_acc")] == [0.25]
    assert t.flush() is True
