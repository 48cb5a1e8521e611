"""Starting a trial is safe to repeat: a failure between its steps (the Optuna trial, its parameters, the MLflow
run, each recorded in the store) never leaves a second Optuna trial or MLflow run behind, however it is retried.

Each fault is injected at one step of the first trial's start; the sweep must still complete with exactly one
Optuna trial and one MLflow run per row, each row pointing at its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from server.core import queue
from server.core.models import Trial
from tests.helpers import mlflow_unreachable_error, quick_spec
from worker.worker import Worker, WorkerOptions

N_TRIALS = 3


def _connection_lost() -> OperationalError:
    return OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


def _once(real: Callable[..., Any], fault: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, except that its first call goes through ``fault`` instead."""
    calls = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return fault(*args, **kwargs) if calls["n"] == 1 else real(*args, **kwargs)

    return wrapped


def _lost_commit(backends, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The Optuna trial is committed, but the answer never comes back (the database went away meanwhile)."""
    real = backends.storage.create_new_trial

    def fault(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise _connection_lost()

    monkeypatch.setattr(backends.storage, "create_new_trial", _once(real, fault))


def _optuna_retried_a_commit(backends, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Optuna's own retry of a commit whose answer was lost: the trial is created twice."""
    real = backends.storage.create_new_trial

    def fault(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(backends.storage, "create_new_trial", _once(real, fault))


def _lost_before_get_trial(backends, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The outage of CI's failed run: the Optuna trial exists, reading it back fails."""
    real = backends.storage.get_trial

    def fault(*args: Any, **kwargs: Any) -> Any:
        raise _connection_lost()

    monkeypatch.setattr(backends.storage, "get_trial", _once(real, fault))


def _store_down_past_the_wait(backends, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The store stays away longer than the worker waits, right after the Optuna trial was created: the row is
    handed back without the trial's id, and the next claim must find the trial by itself."""

    def fault(*args: Any, **kwargs: Any) -> Any:
        raise _connection_lost()

    monkeypatch.setattr(queue, "bind", _once(queue.bind, fault))


def _mlflow_down_after_create_run(backends, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The MLflow run is created, then the tracking server stops answering: the row is handed back, and the next
    claim must reuse both the Optuna trial and the run."""
    client = backends.tracker.client
    real = client.log_text

    def fault(*args: Any, **kwargs: Any) -> Any:
        raise mlflow_unreachable_error()

    monkeypatch.setattr(client, "log_text", _once(real, fault))


FAULTS = {
    "optuna-commit-answer-lost": _lost_commit,
    "optuna-retried-commit": _optuna_retried_a_commit,
    "optuna-read-back-lost": _lost_before_get_trial,
    "store-down-past-the-wait": _store_down_past_the_wait,
    "mlflow-down-after-create-run": _mlflow_down_after_create_run,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_failed_start_leaves_one_optuna_trial_and_one_run_per_trial(  # type: ignore[no-untyped-def]
    fault, client, settings, backends, monkeypatch,
) -> None:
    spec = quick_spec(train={"epochs": 2}, search={**quick_spec()["search"], "n_trials": N_TRIALS})
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    settings = settings.model_copy(update={"db_wait_seconds": 0.0})  # a lost connection is not waited out
    FAULTS[fault](backends, monkeypatch)

    worker = Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends)
    worker.run()

    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert [t["state"] for t in trials] == ["completed"] * N_TRIALS, [t["error"] for t in trials]
    with backends.sessions() as session:  # the API shows Optuna's trial numbers; the ids are the store's own
        ids = dict(session.execute(select(Trial.number, Trial.optuna_trial_id).where(Trial.sweep_id == sweep["id"])).all())
    trials = [{**t, "optuna_trial_id": ids[t["number"]]} for t in trials]
    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    live = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert sorted(t._trial_id for t in live) == sorted(t["optuna_trial_id"] for t in trials)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in live)
    by_id = {t._trial_id: t for t in live}
    for row in trials:
        ot = by_id[row["optuna_trial_id"]]
        assert ot.number == row["optuna_trial_number"] and ot.user_attrs["vitsweep.trial_number"] == row["number"]
        assert ot.params == row["params"] and sorted(ot.intermediate_values) == [1, 2]
    # A duplicate Optuna itself made is failed at once; nothing else is ever left over.
    assert len(study.trials) == N_TRIALS + (fault == "optuna-retried-commit")

    runs = backends.tracker.client.search_runs(
        [backends.tracker.experiment_id], filter_string=f"tags.`vitsweep.sweep_id` = '{sweep['id']}' and "
                                                        "tags.`vitsweep.kind` = 'trial'")
    assert sorted(r.info.run_id for r in runs) == sorted(t["mlflow_run_id"] for t in trials)
    assert {r.info.status for r in runs} == {"FINISHED"}
    if fault == "mlflow-down-after-create-run":
        first = next(t for t in trials if t["number"] == 0)
        assert backends.tracker.client.get_run(first["mlflow_run_id"]).data.params["searched.train.lr"]
