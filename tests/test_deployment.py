"""The docker-compose deployment, as separate processes on this machine: PostgreSQL (one database for the store and
Optuna, one for MLflow), ``mlflow server`` on PostgreSQL with proxied artifacts, ``vitsweep server``, and two
``vitsweep worker`` processes, each with its own home directory as if on its own machine.

A sweep is submitted over HTTP; one worker is SIGKILLed mid-trial and a new one started. The sweep completes, every
trial completes exactly once (the killed one is reclaimed after its lease and resumes from the checkpoint synced to
MLflow), and the MLflow server holds the parent run and one nested run per trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import PgDatabases
from tests.helpers import answers, free_port, quick_spec

BIN = Path(sys.executable).parent
TOKEN = "deployment-token-0123456789abcdef"
N_TRIALS = 4
EPOCHS = 3


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a worker supervisor's fork server and, below it, its slot processes)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


class Proc:
    """A service process with its log file; stopped (with its slot processes) by :meth:`kill`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.popen = subprocess.Popen(argv, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for pid in [*_descendants(self.popen.pid), self.popen.pid]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def _wait(what: str, ready: Callable[[], bool], timeout: float, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            assert p.alive(), f"{p.name} exited:\n{p.tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {p.name}\n{p.tail(1500)}" for p in procs)
        time.sleep(0.3)


@pytest.fixture
def mlflow_db(fresh_pg_database: PgDatabases) -> str:
    """A second fresh database, for the MLflow server (compose gives MLflow its own database too)."""
    return fresh_pg_database.create("vitsweep_test_mlflow")


@pytest.mark.slow
@pytest.mark.postgres
def test_compose_like_deployment_survives_a_killed_worker(pg_url: str, mlflow_db: str, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    mlflow_port, api_port = free_port(), free_port()
    tracking = f"http://127.0.0.1:{mlflow_port}"
    api = f"http://127.0.0.1:{api_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("VITSWEEP_")}
    shared = {
        "VITSWEEP_DATABASE_URL": pg_url,
        "VITSWEEP_MLFLOW_TRACKING_URI": tracking,
        "VITSWEEP_API_TOKEN": TOKEN,
        "VITSWEEP_LEASE_SECONDS": "5",
        "VITSWEEP_HEARTBEAT_SECONDS": "1",
        "VITSWEEP_POLL_SECONDS": "0.2",
    }

    def env(home: str, **extra: str) -> dict[str, str]:
        return {**base, **shared, "VITSWEEP_HOME": str(tmp_path / home), **extra}

    def worker(name: str) -> Proc:
        return Proc(name, [str(BIN / "vitsweep"), "worker", "--devices", "cpu", "--burst"], env(name), logs)

    procs: list[Proc] = []
    try:
        procs.append(Proc("mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri", mlflow_db,
                                     "--artifacts-destination", str(tmp_path / "mlartifacts"), "--serve-artifacts",
                                     "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
                          {**base}, logs))
        _wait("mlflow server", lambda: answers(f"{tracking}/health"), 120, procs)
        procs.append(Proc("api", [str(BIN / "vitsweep"), "server"],
                          env("api", VITSWEEP_API_PORT=str(api_port)), logs))
        _wait("the API", lambda: answers(f"{api}/healthz"), 120, procs)  # it migrates the database first
        first, second = worker("worker-a"), worker("worker-b")  # compose: depends_on api (healthy)
        procs += [first, second]

        spec = quick_spec(
            name="compose", dataset={"options": {"num_samples": 1200, "num_classes": 4}}, train={"epochs": EPOCHS},
            search={**quick_spec()["search"], "n_trials": N_TRIALS},
        )
        client = httpx.Client(base_url=api, timeout=30)
        assert client.post("/api/v1/sweeps", json=spec).status_code == 401  # the token guards the deployment
        r = client.post("/api/v1/sweeps", json=spec, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 201, r.text
        sweep = r.json()

        def trials() -> list[dict[str, Any]]:
            got = client.get(f"/api/v1/sweeps/{sweep['id']}/trials")
            assert got.status_code == 200, got.text
            return list(got.json())

        # Kill the first worker (supervisor and slot, SIGKILL: no goodbye) once its trial has a checkpoint.
        victim: dict[str, Any] = {}

        def first_is_mid_trial() -> bool:
            slots = {str(pid) for pid in _descendants(first.popen.pid)}
            for t in trials():
                pid = (t["worker_id"] or "::").split(":")[1]
                if t["state"] == "running" and pid in slots and 1 <= t["epochs_done"] < EPOCHS:
                    victim.update(t)
                    return True
            return False

        _wait("a trial mid-way on the first worker", first_is_mid_trial, 120, procs)
        first.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        procs.remove(first)
        replacement = worker("worker-c")
        procs.append(replacement)

        def done() -> bool:
            return client.get(f"/api/v1/sweeps/{sweep['id']}").json()["state"] != "running"

        # Burst workers exit once the queue is drained; the sweep ends before that.
        _wait("the sweep to end", done, 180, [p for p in procs if p.name in ("mlflow", "api")])
        final = client.get(f"/api/v1/sweeps/{sweep['id']}").json()
        rows = trials()
        print(f"\nkilled worker-a during trial {victim['number']} at epoch {victim['epochs_done']}; "
              f"sweep ended {time.monotonic() - killed_at:.1f}s later: {final['state']} {final['counts']}")

        # -- the store: every trial completed exactly once ------------------------------------------------------
        assert final["state"] == "completed", final
        assert [t["state"] for t in rows] == ["completed"] * N_TRIALS, [(t["number"], t["state"], t["error"]) for t in rows]
        assert all(t["epochs_done"] == EPOCHS for t in rows)
        again = next(t for t in rows if t["number"] == victim["number"])
        assert again["attempts"] == 2 and again["worker_id"] != victim["worker_id"], again
        assert again["mlflow_run_id"] == victim["mlflow_run_id"]
        assert [t["number"] for t in rows if t["attempts"] != 1] == [victim["number"]]

        # The store says the sweep ended as the last trial's result is written; its worker closes the trial in Optuna
        # and MLflow, and the sweep's MLflow run, just after. Burst workers exit once that is done: wait for them.
        for p in procs:
            if p.name.startswith("worker"):
                p.popen.wait(60)
                assert p.popen.returncode == 0, p.tail()

        # -- Optuna (same database): one trial per row, all complete ----------------------------------------
        storage = optuna.storages.RDBStorage(pg_url)
        study = optuna.load_study(study_name=final["study_name"], storage=storage)
        assert len(study.trials) == N_TRIALS
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        storage.engine.dispose()

        # -- the MLflow server: the parent run and one nested run per trial ---------------------------------
        ml = MlflowClient(tracking)
        runs = ml.search_runs([final["mlflow_experiment_id"]], f"tags.`vitsweep.sweep_id` = '{sweep['id']}'")
        parents = [r for r in runs if r.data.tags.get("vitsweep.kind") == "sweep"]
        nested = [r for r in runs if r.data.tags.get("vitsweep.kind") == "trial"]
        assert len(parents) == 1 and parents[0].info.run_id == final["mlflow_run_id"]
        assert parents[0].info.status == "FINISHED"
        assert len(nested) == N_TRIALS
        assert {r.data.tags["mlflow.parentRunId"] for r in nested} == {final["mlflow_run_id"]}
        assert {r.info.run_id for r in nested} == {t["mlflow_run_id"] for t in rows}
        assert all(r.info.status == "FINISHED" for r in nested)
        for run in nested:  # continuous curves, the resumed trial's included: each epoch once
            steps = sorted(m.step for m in ml.get_metric_history(run.info.run_id, "val_acc"))
            assert steps == list(range(1, EPOCHS + 1)), (run.data.tags.get("vitsweep.trial_number"), steps)
        resumed = ml.get_run(victim["mlflow_run_id"])
        assert int(resumed.data.tags["vitsweep.resumed_from_epoch"]) >= victim["epochs_done"]
        # The replacement ran on another "machine": it resumed from the checkpoint synced to the MLflow server.
        assert "checkpoints" in {a.path for a in ml.list_artifacts(victim["mlflow_run_id"])}
    finally:
        for p in procs:
            if p.alive():
                p.kill(signal.SIGKILL)
    everything = "".join(p.log.read_text(errors="replace") for p in [*procs, first] if p.log.exists())
    assert TOKEN not in everything, "the API token was logged"
