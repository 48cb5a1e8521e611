"""A worker stalled past its lease (SIGSTOP) and then continued (SIGCONT) writes nothing of its lost trial: no
checkpoint, MLflow metric, artifact or summary; the trial's next resume takes the checkpoint that matches the
store's ``epochs_done``, and MLflow holds every epoch exactly once. Real worker processes, short leases."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
from sqlalchemy.engine import make_url

from server.core.db import is_sqlite
from tests.helpers import WorkerProcesses, quick_spec
from tests.worker.test_recovery import _assert_continuous, _trial, _wait

LEASE = {"VITSWEEP_LEASE_SECONDS": "3", "VITSWEEP_HEARTBEAT_SECONDS": "1", "VITSWEEP_MAX_ATTEMPTS": "5"}
# A slot stopped in the middle of a write transaction would hold SQLite's write lock (the store's, or the embedded
# MLflow store's) until it is continued, and every other worker would wait on it: the tests stop slots mid-epoch
# (or well after their last epoch's writes), and only where neither store is locked (``_stop_outside_writes``).
# The end-of-trial figures, as MLflow holds them (summary/<name>, apart from the per-epoch curves).
SUMMARY = tuple(f"summary/{k}" for k in ("param_count", "flops_per_image", "best_val_acc", "final_val_loss", "seconds_per_epoch"))

STALE = quick_spec(
    name="stale",
    dataset={"name": "synthetic", "img_size": 8, "options": {"num_samples": 800, "num_classes": 4}},
    train={"epochs": 12, "batch_size": 32, "lr": 3e-3, "svc_probe": False},
    search={**quick_spec()["search"], "n_trials": 1},
)


def _slot(trial: dict) -> int:  # type: ignore[type-arg]
    """The pid of the slot process that holds the trial (worker ids are ``host:pid:device:slot``)."""
    return int(trial["worker_id"].split(":")[1])


def _sqlite_stores(settings) -> list[Path]:  # type: ignore[no-untyped-def]
    """The SQLite files a slot writes to: the vitsweep store and the embedded MLflow store."""
    urls = (settings.db_url, settings.tracking_uri)
    return [Path(str(make_url(url).database)) for url in urls if is_sqlite(url)]


def _unlocked(path: Path) -> bool:
    """No other connection holds a lock a writer would wait on (``BEGIN EXCLUSIVE`` is granted)."""
    conn = sqlite3.connect(path, timeout=0.2)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def _stop_outside_writes(pid: int, stores: list[Path]) -> None:
    """SIGSTOP the slot where it holds no SQLite lock. Stopped inside a write (its heartbeat, MLflow's system
    metrics thread, the background metrics logger), it would hold the store until continued, and every other
    worker's write would fail with "database is locked" (the new owner's trial failed so, once). Stopped holding
    one, it goes on for a moment and is stopped again."""
    for _ in range(500):
        os.kill(pid, signal.SIGSTOP)
        if all(_unlocked(path) for path in stores):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError(f"slot {pid} held a SQLite lock at every one of 500 stops")


def _written_since(folder: Path, since: float) -> dict[Path, int]:
    """Every checkpoint under ``folder`` written at or after ``since``, with the epoch it saved."""
    out = {}
    for path in folder.rglob("*.pt"):
        if path.stat().st_mtime >= since:
            out[path] = int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    return out


def _artifact_files(backends, run_id: str) -> list[Path]:  # type: ignore[no-untyped-def]
    root = Path(unquote(urlparse(backends.tracker.client.get_run(run_id).info.artifact_uri).path))
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_slot_stalled_past_its_lease_writes_nothing_and_resume_takes_the_owners_checkpoint(  # type: ignore[no-untyped-def]
    client, settings, backends, tmp_path
) -> None:
    sweep = client.post("/api/v1/sweeps", json=STALE).json()
    trial_dir = settings.home / "trials" / f"sweep{sweep['id']}-trial0"
    workers = WorkerProcesses(tmp_path, LEASE)
    stale_log = workers.start("stale")
    try:
        _wait(lambda: _trial(client, sweep["id"])["epochs_done"] >= 1, 900, "one epoch")
        began = time.monotonic()
        first = _wait(lambda: (t := _trial(client, sweep["id"]))["epochs_done"] >= 2 and t, 900, "two epochs")
        time.sleep((time.monotonic() - began) / 2)  # the middle of the next epoch
        stale = _slot(first)
        _stop_outside_writes(stale, _sqlite_stores(settings))  # mid-epoch, its lease running out
        workers.start("owner")
        owner = _wait(lambda: (t := _trial(client, sweep["id"]))["worker_id"] and _slot(t) != stale
                      and t["epochs_done"] >= first["epochs_done"] + 3 and t, 900, "the new owner's epochs")
        os.kill(_slot(owner), signal.SIGKILL)  # the new owner dies too: its lease must run out in turn
        owned_epochs = _trial(client, sweep["id"])["epochs_done"]
        woke = time.time()
        os.kill(stale, signal.SIGCONT)
        _wait(lambda: "lease lost" in stale_log.read_text(errors="replace"), 900, "the stalled slot to notice")
        # Nothing it wrote after it woke: every checkpoint written since is a later owner's, past the new owner's.
        stale_writes = {p: e for p, e in _written_since(trial_dir, woke).items() if e < owned_epochs}
        assert stale_writes == {}, workers.output()
        done = _wait(lambda: (t := _trial(client, sweep["id"]))["state"] == "completed" and t, 900, "completion")
    finally:
        workers.stop()
        print(workers.output())  # shown when the test fails
    output = workers.output()
    assert done["epochs_done"] == 12 and done["attempts"] == 3, output
    run = backends.tracker.client.get_run(done["mlflow_run_id"])
    # The resume took the dead owner's checkpoint (one epoch ahead of the store at most), not the stalled slot's.
    resumed = int(run.data.tags["vitsweep.resumed_from_epoch"])
    assert owned_epochs <= resumed <= owned_epochs + 1, (resumed, owned_epochs, output)
    assert f"resumes from its epoch-{resumed} checkpoint" in output
    _assert_continuous(backends, {**done, "study_name": sweep["study_name"]}, epochs=12)
    for key in SUMMARY:
        assert len(backends.tracker.client.get_metric_history(done["mlflow_run_id"], key)) == 1, key


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_slot_stalled_after_its_last_epoch_uploads_and_logs_nothing(client, settings, backends, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Stopped between its last epoch and its uploads, continued once the trial's new owner completed it."""
    spec = quick_spec(
        name="stale-end",
        dataset={"name": "synthetic", "img_size": 8, "options": {"num_samples": 800, "num_classes": 4}},
        train={"epochs": 2, "batch_size": 32, "lr": 3e-3, "svc_probe": True, "plots": True},
        search={**quick_spec()["search"], "n_trials": 1},
    )
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    workers = WorkerProcesses(tmp_path, LEASE)
    stale_log = workers.start("stale")
    try:
        # The slot's last epoch is in the store while it still probes, plots and uploads: stop it there.
        deadline = time.monotonic() + 900
        while (last := _trial(client, sweep["id"]))["epochs_done"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # past the last epoch's writes, in the probe or the plots
        stale = _slot(last)
        _stop_outside_writes(stale, _sqlite_stores(settings))
        assert _trial(client, sweep["id"])["state"] == "running", "the slot finished before it could be stopped"
        workers.start("owner")
        done = _wait(lambda: (t := _trial(client, sweep["id"]))["state"] == "completed" and t, 900, "completion")
        assert _slot(done) != stale
        woke = time.time()
        os.kill(stale, signal.SIGCONT)
        # It says so once it has made (or, as it must, not made) its trial's uploads and summary.
        _wait(lambda: "lease lost" in stale_log.read_text(errors="replace"), 900, "the stalled slot to notice")
    finally:
        workers.stop()
        print(workers.output())  # shown when the test fails
    output = workers.output()
    assert done["attempts"] == 2, output
    mlflow = backends.tracker.client
    for key in SUMMARY:
        assert len(mlflow.get_metric_history(done["mlflow_run_id"], key)) == 1, (key, output)
    files = _artifact_files(backends, done["mlflow_run_id"])
    assert any(p.name == "best.pt" for p in files) and any(p.suffix == ".png" for p in files)
    assert [p for p in files if p.stat().st_mtime >= woke] == [], output
    assert mlflow.get_run(done["mlflow_run_id"]).info.status == "FINISHED"
