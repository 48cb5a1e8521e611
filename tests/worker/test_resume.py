"""Where a reclaimed trial resumes from, and what happens when it cannot: a checkpoint that cannot be read is set
aside and the next one tried (the copy synced to MLflow, then from scratch), never crashing the slot into a loop
of lost leases; an MLflow outage while resuming or at the final uploads fails the trial with that reason."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.helpers import WorkerProcesses, mlflow_unreachable_error, quick_spec, train_with_hook
from tests.worker.test_recovery import _assert_continuous, _trial, _wait
from worker import resume
from worker.engine import checkpoint
from worker.worker import Worker, WorkerOptions

LEASE = {"VITSWEEP_LEASE_SECONDS": "3", "VITSWEEP_HEARTBEAT_SECONDS": "0.5", "VITSWEEP_MAX_ATTEMPTS": "3"}
GARBAGE = b"\x80\x02 not a checkpoint: a torn copy, a full disk, a bit flip " * 64
SPEC = quick_spec(
    name="garbage",
    dataset={"name": "synthetic", "img_size": 8, "options": {"num_samples": 800, "num_classes": 4}},
    train={"epochs": 5, "batch_size": 32, "lr": 3e-3, "svc_probe": False},
    search={**quick_spec()["search"], "n_trials": 1},
)


def _synced_copy(backends, run_id: str) -> Path:  # type: ignore[no-untyped-def]
    """The file of the trial's MLflow-synced ``last.pt`` in the local artifact store."""
    root = Path(unquote(urlparse(backends.tracker.client.get_run(run_id).info.artifact_uri).path))
    return root / "checkpoints" / "last.pt"


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("garbage", ["local", "local-and-mlflow"])
def test_a_garbage_checkpoint_is_set_aside_and_the_trial_goes_on(  # type: ignore[no-untyped-def]
    client, settings, backends, tmp_path, garbage
) -> None:
    sweep = client.post("/api/v1/sweeps", json=SPEC).json()
    trial_dir = settings.home / "trials" / f"sweep{sweep['id']}-trial0"
    # A first worker hands the trial back after its second epoch, with its checkpoint, synced to MLflow too (as
    # SIGTERM does; stopped from the epoch boundary, not by a test racing a trial that may finish in a second).
    box: list[Worker] = []
    box.append(Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends,
                      train=_stop_after_epoch(settings, box, 2)))
    box[0].run()
    released = _trial(client, sweep["id"])
    assert released["state"] == "queued" and released["epochs_done"] == 2, released
    spoiled = sorted(trial_dir.rglob("last.pt"))
    assert spoiled, list(trial_dir.rglob("*"))
    if garbage == "local-and-mlflow":
        spoiled.append(_synced_copy(backends, released["mlflow_run_id"]))
    for path in spoiled:
        path.write_bytes(GARBAGE)

    workers = WorkerProcesses(tmp_path, LEASE)
    started = time.monotonic()
    workers.start("second", "--burst")
    try:
        done = _wait(lambda: (t := _trial(client, sweep["id"]))["state"] not in ("queued", "running") and t, 900,
                     "the trial to end")
        took = time.monotonic() - started
        assert workers.wait(600) == [0]
    finally:
        workers.stop()
        print(workers.output())
    output = workers.output()
    print(f"garbage in {garbage}: the trial ended {done['state']} {took:.1f}s after the worker started")
    # One claim, no crashed slot, no lease waited out: the trial resumed from the synced copy, or from scratch.
    assert done["state"] == "completed" and done["attempts"] == 1, (done, output)
    assert "cannot be read" in output and "Traceback" not in output, output
    assert len(list((trial_dir / resume.UNREADABLE).iterdir())) == len(spoiled)
    run = backends.tracker.client.get_run(done["mlflow_run_id"])
    expected = released["epochs_done"] if garbage == "local" else 0
    assert int(run.data.tags["vitsweep.resumed_from_epoch"]) == expected
    _assert_continuous(backends, {**done, "study_name": sweep["study_name"]}, epochs=5)


def _unreachable(*args: object, **kwargs: object) -> None:
    raise mlflow_unreachable_error()


def _stop_after_epoch(settings, worker_box: list[Worker], epoch: int = 1):  # type: ignore[no-untyped-def]
    def hook(job, report) -> None:  # type: ignore[no-untyped-def]
        if report.epoch == epoch:
            worker_box[0].stop()  # as SIGTERM would: the trial goes back to the queue with its checkpoint

    return train_with_hook(settings, hook)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("where", ["resume", "final-uploads"])
def test_an_mlflow_outage_fails_the_trial_with_its_reason(client, settings, backends, monkeypatch, where) -> None:  # type: ignore[no-untyped-def]
    """MLflow away while a trial resumes (its synced checkpoint cannot be fetched) or at its final uploads: the
    trial is requeued while attempts remain, then failed with MLflow's error; the worker loop goes on."""
    settings = settings.model_copy(update={"max_attempts": 2})
    spec = quick_spec(train={"epochs": 2}, search={**quick_spec()["search"], "n_trials": 1})
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    box: list[Worker] = []
    if where == "resume":  # a first worker hands the trial back after an epoch; the next one runs elsewhere
        box.append(Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends,
                          train=_stop_after_epoch(settings, box)))
        box[0].run()
        assert _trial(client, sweep["id"])["state"] == "queued"
        for path in (settings.home / "trials").rglob("*.pt"):
            path.unlink()
        monkeypatch.setattr(backends.tracker.client, "download_artifacts", _unreachable)
    else:
        monkeypatch.setattr(backends.tracker, "log_summary", _unreachable)
    worker = Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends)
    assert worker.run() == 2  # the trial twice (requeued once), and nothing escaped the loop
    done = _trial(client, sweep["id"])
    assert done["state"] == "failed" and done["attempts"] == 2, done
    assert done["error"].startswith("MlflowException") and "worker lost" not in done["error"], done["error"]
    assert backends.tracker.client.get_run(done["mlflow_run_id"]).data.tags["vitsweep.state"] == "failed"


def _found(tmp_path: Path, name: str, epoch: int) -> resume.Found:
    path = tmp_path / name / resume.LAST
    path.parent.mkdir(parents=True)
    return resume.Found(path, {"epoch": epoch})


def test_choose_takes_the_checkpoint_matching_the_store(tmp_path: Path) -> None:
    stale, owner, ahead = _found(tmp_path, "1-stale", 5), _found(tmp_path, "2-owner", 13), _found(tmp_path, "3", 20)
    assert resume.choose([stale, owner], 13) is owner
    assert resume.choose([stale, owner, ahead], 13) is owner  # further ahead than its owners could have written
    unreported = _found(tmp_path, "4-unreported", 14)  # written, its worker killed before the heartbeat
    assert resume.choose([stale, owner, unreported], 13) is unreported
    again = _found(tmp_path, "5-again", 13)
    assert resume.choose([owner, again], 13) is again  # of equals, the newest attempt's
    assert resume.choose([stale], 13) is stale  # behind: retrained from there, nothing logged twice
    assert resume.choose([], 13) is None


def test_unreadable_checkpoints_are_set_aside(tmp_path: Path) -> None:
    garbage = tmp_path / "attempts" / "1" / "last.pt"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(GARBAGE)
    weights_only = tmp_path / "attempts" / "2" / "last.pt"
    checkpoint.save({"model": {}, "epoch": 3}, weights_only)  # readable, but nothing to resume from
    assert resume.local(tmp_path) == []
    assert not garbage.exists() and not weights_only.exists()
    assert len(list((tmp_path / resume.UNREADABLE).iterdir())) == 2

