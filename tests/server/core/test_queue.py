"""The queue's rules on SQLite and PostgreSQL: order, ownership, leases, release, pause and cancel."""

from __future__ import annotations

import optuna

from server.core import queue, studies, sweeps
from server.core.models import SweepState, TrialState
from server.core.spec import ExperimentSpec
from tests.helpers import quick_spec


def _sweep(backends, n: int = 3, **changes):  # type: ignore[no-untyped-def]
    spec = quick_spec(search={**quick_spec()["search"], "n_trials": n}, **changes)
    return sweeps.create_sweep(backends, ExperimentSpec.model_validate(spec))


def test_claims_oldest_first_across_sweeps(backends) -> None:  # type: ignore[no-untyped-def]
    a, b = _sweep(backends, 2), _sweep(backends, 1)
    got = [queue.claim(backends.sessions, f"w{i}", "cpu", 60) for i in range(4)]
    assert [(c.sweep_id, c.number) for c in got[:3]] == [(a.id, 0), (a.id, 1), (b.id, 0)]  # type: ignore[union-attr]
    assert got[3] is None
    first = got[0]
    assert first is not None and first.attempts == 1 and not first.resuming
    assert first.study_name == a.study_name and first.parent_run_id == a.mlflow_run_id


def test_only_the_owner_heartbeats_finishes_or_releases(backends) -> None:  # type: ignore[no-untyped-def]
    sweep = _sweep(backends, 1)
    claim = queue.claim(backends.sessions, "owner", "cpu", 60)
    assert claim is not None
    assert queue.heartbeat(backends.sessions, claim.row_id, "owner", 60, epochs_done=1, value=0.5).owned
    assert not queue.heartbeat(backends.sessions, claim.row_id, "intruder", 60).owned
    assert queue.finish(backends.sessions, claim.row_id, "intruder", TrialState.completed, value=1.0) == (False, None)
    assert not queue.release(backends.sessions, claim.row_id, "intruder", epochs_done=1, reason="x")
    written, sweep_state = queue.finish(backends.sessions, claim.row_id, "owner", TrialState.completed, value=0.75,
                                        metrics={"params": 10}, epochs_done=1)
    assert written and sweep_state is SweepState.completed  # its only trial finished
    view = sweeps.get_sweep(backends.sessions, sweep.id)
    assert view.sweep.state is SweepState.completed and view.best is not None and view.best.value == 0.75
    assert view.counts["completed"] == 1


def test_release_returns_the_trial_without_spending_an_attempt(backends) -> None:  # type: ignore[no-untyped-def]
    _sweep(backends, 1)
    claim = queue.claim(backends.sessions, "w", "cpu", 60)
    assert claim is not None
    assert queue.bind(backends.sessions, claim.row_id, "w", optuna_trial_id=7, optuna_trial_number=0)
    assert queue.attach(backends.sessions, claim.row_id, "w", params={"train.lr": 0.01}, mlflow_run_id="run")
    assert queue.release(backends.sessions, claim.row_id, "w", epochs_done=3, reason="shutdown")
    again = queue.claim(backends.sessions, "w2", "cpu", 60)
    assert again is not None and again.row_id == claim.row_id
    assert again.attempts == 1 and again.resuming and again.epochs_done == 3
    assert again.params == {"train.lr": 0.01} and again.mlflow_run_id == "run"


def test_a_failed_attempt_handed_back_spends_it(backends) -> None:  # type: ignore[no-untyped-def]
    """A trial requeued after a failure that may not repeat (MLflow away) keeps the attempt it spent, so one that
    does repeat ends once its attempts are used up instead of going round for ever."""
    _sweep(backends, 1)
    claim = queue.claim(backends.sessions, "w", "cpu", 60)
    assert claim is not None and claim.attempts == 1
    assert queue.release(backends.sessions, claim.row_id, "w", epochs_done=2, reason="MlflowException: away",
                         count_attempt=True)
    again = queue.claim(backends.sessions, "w2", "cpu", 60)
    assert again is not None and again.row_id == claim.row_id
    assert again.attempts == 2 and again.epochs_done == 2


def test_a_trial_handed_back_before_its_run_keeps_its_optuna_trial(backends) -> None:  # type: ignore[no-untyped-def]
    """Bound to an Optuna trial but without an MLflow run: re-claimed as a fresh start that reuses the Optuna
    trial; cancelled while queued, its Optuna trial is closed too."""
    sweep = _sweep(backends, 1)
    claim = queue.claim(backends.sessions, "w", "cpu", 60)
    assert claim is not None
    trial_id, number = studies.create_trial(backends.storage, sweep.study_name, claim.number)
    assert studies.create_trial(backends.storage, sweep.study_name, claim.number) == (trial_id, number)  # once
    assert queue.bind(backends.sessions, claim.row_id, "w", optuna_trial_id=trial_id, optuna_trial_number=number)
    assert not queue.bind(backends.sessions, claim.row_id, "intruder", optuna_trial_id=1, optuna_trial_number=1)
    assert queue.release(backends.sessions, claim.row_id, "w", epochs_done=0, reason="store away")
    again = queue.claim(backends.sessions, "w2", "cpu", 60)
    assert again is not None and not again.resuming
    assert again.optuna_trial_id == trial_id and again.optuna_trial_number == number and again.mlflow_run_id is None
    assert queue.release(backends.sessions, again.row_id, "w2", epochs_done=0, reason="store away")
    sweeps.cancel_sweep(backends, sweep.id)
    assert backends.storage.get_trial(trial_id).state == optuna.trial.TrialState.FAIL


def test_paused_sweeps_are_not_claimed_and_cancel_reaches_heartbeats(backends) -> None:  # type: ignore[no-untyped-def]
    sweep = _sweep(backends, 2)
    running = queue.claim(backends.sessions, "w", "cpu", 60)
    assert running is not None
    sweeps.set_paused(backends.sessions, sweep.id, True)
    assert queue.claim(backends.sessions, "w", "cpu", 60) is None
    assert queue.heartbeat(backends.sessions, running.row_id, "w", 60).stop_reason is None  # pause lets it finish
    sweeps.set_paused(backends.sessions, sweep.id, False)
    sweeps.cancel_sweep(backends, sweep.id)
    assert queue.heartbeat(backends.sessions, running.row_id, "w", 60).stop_reason == "sweep cancelled"
    assert queue.claim(backends.sessions, "w", "cpu", 60) is None
    trials = sweeps.list_trials(backends.sessions, sweep.id)
    assert [t.state for t in trials] == [TrialState.running, TrialState.cancelled]


def test_expired_leases_only(backends) -> None:  # type: ignore[no-untyped-def]
    _sweep(backends, 2)
    alive = queue.claim(backends.sessions, "alive", "cpu", 60)
    dead = queue.claim(backends.sessions, "dead", "cpu", -1)
    assert alive is not None and dead is not None
    assert queue.reap_expired(backends.sessions, max_attempts=3) == []
    again = queue.claim(backends.sessions, "new", "cpu", 60)
    assert again is not None and again.row_id == dead.row_id and again.attempts == 2
    assert queue.heartbeat(backends.sessions, alive.row_id, "alive", 60).owned
    assert not queue.heartbeat(backends.sessions, dead.row_id, "dead", 60).owned  # its lease is gone
