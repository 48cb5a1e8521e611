"""Crashes and failures: a killed worker's trial resumes from its checkpoint in the same MLflow run and
Optuna trial; a stopped worker hands its trial back; OOM, runtime errors and NaN losses stay trial failures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

import vitmodels
from tests.helpers import quick_spec
from worker.worker import Worker, WorkerOptions

VITSWEEP = str(Path(sys.executable).parent / "vitsweep")

SLOW_TRIAL = quick_spec(
    name="recover",
    dataset={"name": "synthetic", "img_size": 16, "options": {"num_samples": 1500, "num_classes": 4}},
    train={"epochs": 6, "batch_size": 32, "lr": 3e-3, "svc_probe": False},
    search={**quick_spec()["search"], "n_trials": 1},
)


def _start_worker(extra_env: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra_env}
    return subprocess.Popen([VITSWEEP, "worker", "--devices", "cpu"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _trial(client, sweep_id):  # type: ignore[no-untyped-def]
    return client.get(f"/api/v1/sweeps/{sweep_id}/trials").json()[0]


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.stdout.read() if proc.stdout else ""


def _assert_continuous(backends, trial, epochs: int) -> None:  # type: ignore[no-untyped-def]
    """One MLflow run with every epoch exactly once; one Optuna trial with every epoch reported."""
    mlflow = backends.tracker.client
    runs = mlflow.search_runs([backends.tracker.experiment_id], filter_string="tags.`vitsweep.kind` = 'trial'")
    assert [r.info.run_id for r in runs] == [trial["mlflow_run_id"]]
    for key in ("val_acc", "train_loss"):
        steps = [m.step for m in mlflow.get_metric_history(trial["mlflow_run_id"], key)]
        assert sorted(steps) == list(range(1, epochs + 1)), (key, steps)
    assert mlflow.get_run(trial["mlflow_run_id"]).info.status == "FINISHED"
    (ot,) = optuna.load_study(study_name=trial["study_name"], storage=backends.storage).trials
    assert ot.number == trial["optuna_trial_number"] and ot.state == optuna.trial.TrialState.COMPLETE
    assert sorted(ot.intermediate_values) == list(range(1, epochs + 1))


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sigkill_mid_trial_resumes_from_checkpoint(client, settings, backends, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sweep = client.post("/api/v1/sweeps", json=SLOW_TRIAL).json()
    env = {"VITSWEEP_LEASE_SECONDS": "3", "VITSWEEP_HEARTBEAT_SECONDS": "0.5"}
    proc = _start_worker(env)
    try:
        first = _wait(lambda: (t := _trial(client, sweep["id"]))["epochs_done"] >= 2 and t, 180, "two epochs")
        slot_pid = int(first["worker_id"].split(":")[1])
        os.kill(slot_pid, signal.SIGKILL)  # no goodbye: the lease must expire; the supervisor restarts the slot
        done = _wait(lambda: (t := _trial(client, sweep["id"]))["state"] == "completed" and t, 180, "completion")
    finally:
        output = _stop(proc)
    assert done["attempts"] == 2, output[-3000:]
    assert done["epochs_done"] == 6
    assert done["worker_id"] != first["worker_id"]
    run = backends.tracker.client.get_run(done["mlflow_run_id"])
    assert done["mlflow_run_id"] == first["mlflow_run_id"]
    assert int(run.data.tags["vitsweep.resumed_from_epoch"]) >= 2
    assert "resumes from its epoch-" in output
    _assert_continuous(backends, {**done, "study_name": sweep["study_name"]}, epochs=6)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_sigterm_hands_the_trial_back_and_it_resumes(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    sweep = client.post("/api/v1/sweeps", json=SLOW_TRIAL).json()
    proc = _start_worker({"VITSWEEP_HEARTBEAT_SECONDS": "0.5"})
    try:
        _wait(lambda: _trial(client, sweep["id"])["epochs_done"] >= 1, 180, "one epoch")
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    finally:
        output = _stop(proc)
    assert proc.returncode == 0, output[-3000:]
    released = _trial(client, sweep["id"])
    assert released["state"] == "queued" and released["attempts"] == 0, released
    assert "checkpoint" in released["error"]
    # Resume "on another machine": nothing of the first worker's disk survives; the checkpoint synced to
    # the trial's MLflow run must carry it.
    shutil.rmtree(settings.home / "trials")
    Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends).run()
    done = _trial(client, sweep["id"])
    assert done["state"] == "completed" and done["attempts"] == 1 and done["epochs_done"] == 6
    assert done["mlflow_run_id"] == released["mlflow_run_id"]
    run = backends.tracker.client.get_run(done["mlflow_run_id"])
    assert int(run.data.tags["vitsweep.resumed_from_epoch"]) >= 1
    _assert_continuous(backends, {**done, "study_name": sweep["study_name"]}, epochs=6)


class _Faulty(nn.Module):
    """Wraps a model; its forward raises or returns NaN, as a GPU running out of memory or a diverging run would."""

    def __init__(self, inner: nn.Module, fault: str) -> None:
        super().__init__()
        self.inner, self.fault = inner, fault
        self.num_features = inner.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fault == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.fault == "runtime":
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
        return self.inner(x) * float("nan")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "fault,state,reason",
    [("oom", "failed", "CUDA out of memory"), ("runtime", "failed", "RuntimeError: cuDNN error"), ("nan", "pruned", "nan loss")],
)
def test_injected_faults_end_the_trial_and_the_worker_goes_on(  # type: ignore[no-untyped-def]
    client, settings, backends, monkeypatch, fault, state, reason
) -> None:
    original = vitmodels.create_model
    created: list[int] = []

    def faulty_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = original(*args, **kwargs)
        created.append(1)
        return _Faulty(model, fault) if len(created) == 1 else model

    spec = quick_spec(train={"epochs": 2}, search={**quick_spec()["search"], "n_trials": 2})
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    monkeypatch.setattr(vitmodels, "create_model", faulty_first)  # after submission, which builds on meta
    worker = Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends)
    worker.run()
    first, second = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert first["state"] == state and reason in first["error"] and first["attempts"] == 1
    assert second["state"] == "completed"  # the worker took the next trial
    run = backends.tracker.client.get_run(first["mlflow_run_id"])
    assert run.data.tags["vitsweep.state"] == state and reason in run.data.tags["vitsweep.error"]
    ot = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage).trials[first["optuna_trial_number"]]
    assert ot.state == (optuna.trial.TrialState.PRUNED if state == "pruned" else optuna.trial.TrialState.FAIL)
    assert client.get(f"/api/v1/sweeps/{sweep['id']}").json()["state"] == "completed"
