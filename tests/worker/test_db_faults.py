"""PostgreSQL restarted in the middle of a sweep: the worker waits for it and goes on, the API answers 503 while
it is away and 200 again after, and every trial still completes exactly once.

The test runs a PostgreSQL server of its own (``tests.helpers.PrivatePostgres``) and stops and starts that one, so
no other test's database is touched, whatever runs beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sqlalchemy.orm import Session, sessionmaker

from server.core import sweeps
from server.core.config import Settings
from server.core.models import SweepState, TrialState
from server.core.spec import ExperimentSpec
from tests.helpers import PrivatePostgres, quick_spec

BIN = Path(sys.executable).parent
N_TRIALS = 10
OUTAGE_SECONDS = 8.0  # the cluster is down this long (plus its own stop and start time)


def _wait_for_postgres(url: str, timeout: float = 60.0) -> None:
    engine = sa.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        engine.dispose()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    yield server
    server.close()


@pytest.fixture
def pg_env(private_pg: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for key in list(os.environ):
        if key.startswith("VITSWEEP_"):
            monkeypatch.delenv(key)
    env = {
        "VITSWEEP_HOME": str(tmp_path / "home"),
        "VITSWEEP_DATABASE_URL": private_pg.create_database("vitsweep_restart"),
        "VITSWEEP_POLL_SECONDS": "0.2",
        "VITSWEEP_LEASE_SECONDS": "60",
        "VITSWEEP_HEARTBEAT_SECONDS": "1",
        "VITSWEEP_DB_WAIT_SECONDS": "45",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


def _counts(sessions: sessionmaker[Session], sweep_id: int) -> dict[str, int]:
    return sweeps.get_sweep(sessions, sweep_id).counts


@pytest.mark.slow
@pytest.mark.postgres
def test_sweep_survives_a_postgres_restart(pg_env: dict[str, str], private_pg: PrivatePostgres, tmp_path: Path) -> None:
    import migrations
    from server.core.backends import make_backends
    from server.main import create_app

    settings = Settings()
    migrations.upgrade(settings.db_url)
    backends = make_backends(settings)
    spec = quick_spec(
        name="pg-restart",
        dataset={"options": {"num_samples": 512, "num_classes": 4}},
        train={"epochs": 3},
        search={**quick_spec()["search"], "n_trials": N_TRIALS},
    )
    sweep_id = sweeps.create_sweep(backends, ExperimentSpec.model_validate(spec)).id
    log_path = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [str(BIN / "vitsweep"), "worker", "--burst", "--slots-per-device", "2"],
        env={**os.environ, **pg_env}, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    outage = None
    try:
        with TestClient(create_app(settings, backends)) as api:
            # Restart once the worker is well into the sweep, with trials running.
            deadline = time.monotonic() + 120
            while _counts(backends.sessions, sweep_id)["completed"] < 2 or not _counts(backends.sessions, sweep_id)["running"]:
                assert worker.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the sweep did not get going"
                time.sleep(0.2)
            before = _counts(backends.sessions, sweep_id)
            down_at = time.monotonic()
            try:
                private_pg.stop()
                during = api.get(f"/api/v1/sweeps/{sweep_id}")
                health = api.get("/healthz")
                time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
            finally:
                private_pg.start()
                _wait_for_postgres(pg_env["VITSWEEP_DATABASE_URL"])
                outage = time.monotonic() - down_at
            assert during.status_code == 503 and "database unavailable" in during.json()["detail"], during.text
            assert health.status_code == 503 and health.json()["detail"], health.text
            after = api.get(f"/api/v1/sweeps/{sweep_id}")
            assert after.status_code == 200, after.text
            assert api.get("/healthz").status_code == 200

        worker.wait(timeout=240)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 9)
            worker.wait()
    log = log_path.read_text()
    assert worker.returncode == 0, log[-5000:]
    print(f"\noutage {outage:.1f}s; before it: {before}")

    # The worker did meet the outage, and waited instead of failing.
    waits = [line for line in log.splitlines() if "database unreachable" in line or "retrying in" in line]
    assert waits, log[-5000:]
    print(f"{len(waits)} waits/retries in the worker's log, e.g. {waits[0][-160:]}")
    view = sweeps.get_sweep(backends.sessions, sweep_id)
    assert view.sweep.state == SweepState.completed, view.counts
    trials = sweeps.list_trials(backends.sessions, sweep_id)
    assert len(trials) == N_TRIALS
    assert [t.state for t in trials] == [TrialState.completed] * N_TRIALS, [(t.number, t.state, t.error) for t in trials]
    assert all(t.epochs_done == 3 and t.value is not None for t in trials)
    retried = [t.number for t in trials if t.attempts > 1]
    print(f"trials claimed more than once (resumed, not re-run): {retried}")
    # Exactly once: one Optuna trial and one MLflow run per row, all finished, none duplicated.
    study = optuna.load_study(study_name=view.sweep.study_name, storage=backends.storage)
    live = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(live) == N_TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in live)
    assert sorted(t.optuna_trial_id for t in trials) == sorted(t._trial_id for t in live)
    # The only other trial there can be: a duplicate Optuna's own retry made of a commit whose answer the outage
    # lost, failed at once by the worker, before it had a parameter or a report.
    for extra in (t for t in study.trials if t.state == optuna.trial.TrialState.FAIL):
        assert not extra.params and not extra.intermediate_values, extra
        assert extra.user_attrs["vitsweep.trial_number"] in {t.number for t in trials}, extra
    print(f"Optuna trials: {len(live)} completed, {len(study.trials) - len(live)} failed duplicates")
    client = MlflowClient(settings.tracking_uri)
    runs = client.search_runs([view.sweep.mlflow_experiment_id], f"tags.`vitsweep.sweep_id` = '{sweep_id}'")
    trial_runs = [r for r in runs if r.data.tags.get("vitsweep.kind") == "trial"]
    assert len(trial_runs) == N_TRIALS
    assert {r.info.run_id for r in trial_runs} == {t.mlflow_run_id for t in trials}
    assert all(r.info.status == "FINISHED" for r in trial_runs)
    # Every epoch of every trial is in MLflow once: a resumed trial does not log an epoch twice.
    for run in trial_runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == [1, 2, 3], (run.info.run_id, steps)
    backends.sessions.kw["bind"].dispose()
