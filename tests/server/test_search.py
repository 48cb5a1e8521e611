"""Search through the real worker path: every sampler and pruner, multi-objective NSGA-II across model families,
and sweep control (timeout, max_concurrent_trials, pause/resume, add trials).

Each sweep is checked in all three places: the store (over the API), the Optuna study, and the MLflow runs.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from typing import Any

import optuna
import pytest
from sqlalchemy import update

from server.core import queue
from server.core.db import write_session
from server.core.models import Sweep, TrialState, utcnow
from tests.helpers import quick_spec, train_with_hook
from worker.worker import Worker, WorkerOptions

OPTUNA_STATE = {
    "completed": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "failed": optuna.trial.TrialState.FAIL,
    "cancelled": optuna.trial.TrialState.FAIL,
}
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

# Every kind of range: float (log, step), int (log, step), categorical.
SPACE: dict[str, Any] = {
    "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "step": 0.05},
    "model.arch.width": {"type": "int", "low": 4, "high": 16, "log": True},
    "train.batch_size": {"type": "int", "low": 16, "high": 48, "step": 16},
    "train.optimizer": {"type": "categorical", "choices": ["adam", "adamw"]},
}
# A task the good learning rate learns in one epoch and the tiny one never does: pruning is deterministic.
LEARNABLE = {"name": "synthetic", "img_size": 8, "options": {"num_samples": 128, "num_classes": 4, "noise": 0.5}}


def run_worker(settings, backends, **kw: Any) -> Worker:  # type: ignore[no-untyped-def]
    worker = Worker(settings, WorkerOptions(device="cpu", burst=True, **kw), backends=backends)
    worker.run()
    return worker


def submit(client, spec: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/sweeps", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


def three_places(client, backends, sweep_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], optuna.Study]:  # type: ignore[no-untyped-def]
    """The sweep and its trials from the API, after checking Optuna and MLflow agree with the store on each."""
    sweep = client.get(f"/api/v1/sweeps/{sweep_id}").json()
    trials = client.get(f"/api/v1/sweeps/{sweep_id}/trials").json()
    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    by_number = {t.number: t for t in study.trials}
    mlflow = backends.tracker.client
    for t in trials:
        if t["optuna_trial_number"] is None:  # never started (cancelled while queued)
            assert t["state"] == "cancelled" and t["mlflow_run_id"] is None, t
            continue
        ot = by_number[t["optuna_trial_number"]]
        where = f"sweep {sweep_id} trial {t['number']}"
        assert ot.state == OPTUNA_STATE[t["state"]], where
        assert ot.params == t["params"], where
        run = mlflow.get_run(t["mlflow_run_id"])
        assert run.data.tags["vitsweep.state"] == t["state"], where
        assert run.data.tags["vitsweep.sweep_id"] == str(sweep_id) and run.data.tags["vitsweep.trial_number"] == str(t["number"])
        if t["state"] == "completed" and len(sweep["objectives"]) == 1:
            assert ot.value == pytest.approx(t["value"]), where
        if t["state"] == "pruned":
            assert run.info.status == "FINISHED", where
            assert sorted(ot.intermediate_values) == list(range(1, t["epochs_done"] + 1)), where
    return sweep, trials, study


# -- samplers ------------------------------------------------------------------------------------------------


@SQLITE
def test_every_sampler_runs_through_the_worker(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    searches = {
        "tpe": {"seed": 0, "n_startup_trials": 1},
        "random": {"seed": 0},
        "cmaes": {"seed": 0, "n_startup_trials": 1},
        "gp": {"seed": 0, "n_startup_trials": 1},
        "nsga2": {"seed": 0, "population_size": 2},
    }
    ids = {}
    for sampler, options in searches.items():
        search = {"sampler": sampler, "sampler_options": options, "n_trials": 2, "space": SPACE}
        if sampler == "random":  # an objective other than the default one, minimised
            search.update(metric="val_loss", direction="minimize")
        ids[sampler] = submit(client, quick_spec(name=f"s-{sampler}", search=search))["id"]
    grid = {"sampler": "grid", "n_trials": 1, "space": {"train.lr": {"type": "categorical", "choices": [0.001, 0.01]}}}
    ids["grid"] = submit(client, quick_spec(name="s-grid", search=grid))["id"]
    matrix = submit(client, quick_spec(name="s-matrix", search=None, matrix={
        "model.arch.depth": [1, 2], "train.optimizer": ["adam", "sgd"]}))
    run_worker(settings, backends)

    for sampler, sweep_id in ids.items():
        sweep, trials, _ = three_places(client, backends, sweep_id)
        assert sweep["state"] == "completed", sampler
        assert [t["state"] for t in trials] == ["completed"] * 2, (sampler, trials)
        for t in trials:
            p = t["params"]
            if sampler == "grid":
                continue
            assert 1e-4 <= p["train.lr"] <= 1e-2
            assert p["train.weight_decay"] in (0.0, 0.05, 0.1)
            assert isinstance(p["model.arch.width"], int) and 4 <= p["model.arch.width"] <= 16
            assert p["train.batch_size"] in (16, 32, 48) and p["train.optimizer"] in ("adam", "adamw")
            # The searched width really built the model: the parameter count follows it.
            run = backends.tracker.client.get_run(t["mlflow_run_id"])
            assert int(run.data.params["model.arch.width"]) == p["model.arch.width"]
        if sampler == "random":  # the objective is the best epoch's val_loss, everywhere
            for t in trials:
                history = backends.tracker.client.get_metric_history(t["mlflow_run_id"], "val_loss")
                assert t["value"] == pytest.approx(min(m.value for m in history))
            assert sweep["best_trial"]["value"] == min(t["value"] for t in trials)
        if sampler not in ("grid", "nsga2"):  # NSGA-II's children may inherit a parent's value by crossover
            assert len({t["params"]["train.lr"] for t in trials}) == len(trials), f"{sampler} proposed one point twice"
    # CMA-ES sampled the continuous parameters itself after its one startup trial.
    cma = optuna.load_study(study_name=client.get(f"/api/v1/sweeps/{ids['cmaes']}").json()["study_name"],
                            storage=backends.storage)
    assert any(k.startswith("cma:") for t in cma.trials[1:] for k in t.system_attrs), cma.trials[-1].system_attrs
    # Grids: exactly every combination, each named by its slug.
    for sweep_id, slugs in (
        (ids["grid"], {"lr-0.001", "lr-0.01"}),
        (matrix["id"], {"depth-1_optimizer-adam", "depth-1_optimizer-sgd", "depth-2_optimizer-adam", "depth-2_optimizer-sgd"}),
    ):
        _, trials, _ = three_places(client, backends, sweep_id)
        assert len(trials) == len(slugs) and {t["slug"] for t in trials} == slugs
        assert all(t["state"] == "completed" for t in trials)
        for t in trials:
            assert t["slug"] in backends.tracker.client.get_run(t["mlflow_run_id"]).info.run_name


@SQLITE
def test_nsga2_multi_objective_across_model_families(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    """Maximise val_acc and minimise params over two model families, each with its own arch block."""
    spec = quick_spec(
        name="families",
        model={"name": "cnn", "arch": {}, "arch_by_model": {
            "cnn": {"width": 8, "depth": 2},
            "vit": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32},
        }},
        search={
            "sampler": "nsga2", "sampler_options": {"seed": 3}, "n_trials": 6,
            "metrics": ["val_acc", "params"], "directions": ["maximize", "minimize"],
            "space": {
                "model.name": {"type": "categorical", "choices": ["cnn", "vit"]},
                "model.arch_by_model.cnn.width": {"type": "int", "low": 4, "high": 32, "log": True},
                "model.arch_by_model.vit.hidden_dim": {"type": "categorical", "choices": [16, 32]},
            },
        },
    )
    created = submit(client, spec)
    assert created["objectives"] == ["val_acc", "param_count"] and created["directions"] == ["maximize", "minimize"]
    assert created["metric"] == "val_acc"
    run_worker(settings, backends)

    sweep, trials, study = three_places(client, backends, created["id"])
    assert sweep["state"] == "completed" and [t["state"] for t in trials] == ["completed"] * 6
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"] and study.metric_names == ["val_acc", "param_count"]
    families = {t["params"]["model.name"] for t in trials}
    assert families == {"cnn", "vit"}, trials
    mlflow = backends.tracker.client
    by_number = {t.number: t for t in study.trials}
    for t in trials:
        ot = by_number[t["optuna_trial_number"]]
        # The store's value is the first objective; Optuna holds both; the store keeps both in metrics.
        assert ot.values == pytest.approx([t["value"], t["metrics"]["param_count"]])
        assert t["metrics"]["objectives"] == pytest.approx({"val_acc": t["value"], "param_count": t["metrics"]["param_count"]})
        assert ot.intermediate_values == {}  # no per-epoch reports: Optuna takes none for several objectives
        # A family's own keywords are searched only when it is chosen (conditional parameters).
        model = t["params"]["model.name"]
        other = "vit" if model == "cnn" else "cnn"
        assert not any(k.startswith(f"model.arch_by_model.{other}.") for k in t["params"]), t["params"]
        params = mlflow.get_run(t["mlflow_run_id"]).data.params
        assert params["model.name"] == model
        if model == "cnn":
            assert int(params["model.arch.width"]) == t["params"]["model.arch_by_model.cnn.width"]
            assert params["model.arch.depth"] == "2" and "model.arch.patch_size" not in params
        else:
            assert int(params["model.arch.hidden_dim"]) == t["params"]["model.arch_by_model.vit.hidden_dim"]
            assert params["model.arch.patch_size"] == "4" and "model.arch.width" not in params
    # The API's Pareto front is Optuna's.
    front = {by_number[t["optuna_trial_number"]].number for t in trials if t["number"] in sweep["pareto_front"]}
    assert front == {t.number for t in study.best_trials} and front
    assert sweep["best_trial"]["value"] == max(t["value"] for t in trials)
    # The report draws the front.
    page = client.get(f"/api/v1/sweeps/{created['id']}/report").text
    assert 'id="pareto_front"' in page and f"trials {', '.join(map(str, sweep['pareto_front']))}" in page

    # Refused at submission, with the field's path: pruning several objectives, a block for a model never chosen.
    spec["search"]["pruner"] = "median"
    response = client.post("/api/v1/sweeps", json=spec)
    assert response.status_code == 422 and "single objective" in response.text
    detail = client.post("/api/v1/sweeps", json=quick_spec(model={"name": "cnn", "arch_by_model": {"vit": {"patch_size": 4}}}))
    assert detail.json()["detail"][0]["loc"] == ["body", "model", "arch_by_model", "vit"]


# -- pruners -------------------------------------------------------------------------------------------------


@SQLITE
def test_every_pruner_runs_through_the_worker(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    """A good learning rate first, then a hopeless one: every pruner that can compare them prunes the second."""
    pruners = {
        "none": {},
        "median": {"n_startup_trials": 1, "n_warmup_steps": 0},
        "percentile": {"percentile": 50.0, "n_startup_trials": 1},
        "successive_halving": {"min_resource": 1, "reduction_factor": 2},
        "hyperband": {"min_resource": 1, "max_resource": 3, "reduction_factor": 2},
    }
    ids = {}
    for pruner, options in pruners.items():
        search = {"sampler": "grid", "n_trials": 1, "pruner": pruner, "pruner_options": options,
                  "space": {"train.lr": {"type": "categorical", "choices": [1e-2, 1e-7]}}}
        spec = quick_spec(name=f"p-{pruner}", dataset=LEARNABLE, train={"epochs": 3, "batch_size": 64}, search=search)
        ids[pruner] = submit(client, spec)["id"]
    run_worker(settings, backends)

    for pruner, sweep_id in ids.items():
        sweep, trials, study = three_places(client, backends, sweep_id)
        assert sweep["state"] == "completed", pruner
        good, bad = trials
        assert good["state"] == "completed" and good["epochs_done"] == 3, (pruner, good)
        expected = {"none": {"completed"}, "hyperband": {"completed", "pruned"}}.get(pruner, {"pruned"})
        assert bad["state"] in expected, (pruner, bad)
        if bad["state"] == "pruned":
            assert bad["epochs_done"] < 3 and "pruned" in (bad["error"] or "")
            assert bad["value"] == pytest.approx(study.trials[1].intermediate_values[bad["epochs_done"]])
        else:
            assert bad["epochs_done"] == 3
    # The pruned trial in all three places, spelled out once.
    _, (_, bad), study = three_places(client, backends, ids["median"])
    assert bad["state"] == TrialState.pruned.value and bad["epochs_done"] == 1
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    run = backends.tracker.client.get_run(bad["mlflow_run_id"])
    assert run.data.tags["vitsweep.state"] == "pruned"
    assert [m.step for m in backends.tracker.client.get_metric_history(run.info.run_id, "val_acc")] == [1]


# -- sweep control -------------------------------------------------------------------------------------------


@SQLITE
def test_pause_and_resume_through_the_worker(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    sweep = submit(client, quick_spec(search={**quick_spec()["search"], "n_trials": 2}))
    assert client.post(f"/api/v1/sweeps/{sweep['id']}/pause").json()["state"] == "paused"
    # A burst worker finds no claimable work (the only sweep is paused) and exits without touching it.
    assert Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends).run() == 0
    worker = Worker(settings, WorkerOptions(device="cpu"), backends=backends)  # a long-running one keeps polling
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(2.0)  # ten polls of the worker: none may claim a trial of the paused sweep
        trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
        assert [t["state"] for t in trials] == ["queued", "queued"] and thread.is_alive()
        assert worker.trials_run == 0
        assert client.post(f"/api/v1/sweeps/{sweep['id']}/resume").json()["state"] == "running"
        deadline = time.monotonic() + 120
        while client.get(f"/api/v1/sweeps/{sweep['id']}").json()["state"] == "running":
            assert time.monotonic() < deadline, "the resumed sweep did not finish in 120 s"
            time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive() and worker.trials_run == 2
    got, trials, _ = three_places(client, backends, sweep["id"])
    assert got["state"] == "completed" and [t["state"] for t in trials] == ["completed", "completed"]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_add_trials_to_running_and_completed_sweeps(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(search={**quick_spec()["search"], "sampler": "tpe", "sampler_options": {"seed": 0}, "n_trials": 2})
    sweep = submit(client, spec)
    running = client.post(f"/api/v1/sweeps/{sweep['id']}/trials", json={"n": 1}).json()
    assert running["state"] == "running" and running["n_trials"] == 3 and running["counts"]["queued"] == 3
    run_worker(settings, backends)
    assert client.get(f"/api/v1/sweeps/{sweep['id']}").json()["state"] == "completed"
    mlflow = backends.tracker.client
    assert mlflow.get_run(sweep["mlflow_run_id"]).info.status == "FINISHED"

    reopened = client.post(f"/api/v1/sweeps/{sweep['id']}/trials", json={"n": 2})
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["state"] == "running" and reopened.json()["finished_at"] is None
    assert mlflow.get_run(sweep["mlflow_run_id"]).info.status == "RUNNING"
    run_worker(settings, backends)

    got, trials, study = three_places(client, backends, sweep["id"])
    assert got["state"] == "completed" and got["n_trials"] == 5
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4] and all(t["state"] == "completed" for t in trials)
    assert len(study.trials) == 5
    parent = mlflow.get_run(sweep["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["vitsweep.state"] == "completed"
    assert parent.data.metrics["best_val_acc"] == pytest.approx(got["best_trial"]["value"])

    # Grids are fixed; cancelled sweeps stay cancelled; bad bodies are refused.
    grid = submit(client, quick_spec(search=None, matrix={"train.lr": [0.001, 0.01]}))
    conflict = client.post(f"/api/v1/sweeps/{grid['id']}/trials", json={"n": 1})
    assert conflict.status_code == 409 and "grid" in conflict.json()["detail"]
    client.post(f"/api/v1/sweeps/{sweep['id']}/cancel")  # completed: 409, stays completed
    other = submit(client, spec)
    client.post(f"/api/v1/sweeps/{other['id']}/cancel")
    assert client.post(f"/api/v1/sweeps/{other['id']}/trials", json={"n": 1}).status_code == 409
    assert client.post(f"/api/v1/sweeps/{sweep['id']}/trials", json={"n": 0}).status_code == 422
    assert client.post("/api/v1/sweeps/424242/trials", json={"n": 1}).status_code == 404


@SQLITE
def test_timeout_cancels_queued_trials_and_ends_the_sweep(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(train={"epochs": 2}, search={**quick_spec()["search"], "n_trials": 4, "timeout": 3600})
    sweep = submit(client, spec)
    deadline = client.get(f"/api/v1/sweeps/{sweep['id']}").json()["deadline"]
    assert deadline is not None

    def time_runs_out(job, report):  # type: ignore[no-untyped-def]
        if job.claim.number == 0 and report.epoch == 1:  # mid-trial: the timeout passes
            with write_session(backends.sessions) as session:
                session.execute(update(Sweep).where(Sweep.id == sweep["id"]).values(deadline=utcnow() - timedelta(seconds=1)))

    worker = Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends,
                    train=train_with_hook(settings, time_runs_out))
    worker.run()
    got, trials, _ = three_places(client, backends, sweep["id"])
    assert got["state"] == "completed"
    # The running trial finished; the queued ones were cancelled without ever starting.
    assert trials[0]["state"] == "completed" and trials[0]["epochs_done"] == 2
    assert [t["state"] for t in trials[1:]] == ["cancelled"] * 3
    assert all(t["attempts"] == 0 and "timeout" in t["error"] for t in trials[1:])
    assert worker.trials_run == 1
    parent = backends.tracker.client.get_run(sweep["mlflow_run_id"])
    assert parent.info.status == "FINISHED"

    # More trials for a timed-out sweep: the clock starts again, and they run.
    reopened = client.post(f"/api/v1/sweeps/{sweep['id']}/trials", json={"n": 1}).json()
    assert reopened["state"] == "running"
    from datetime import datetime

    assert datetime.fromisoformat(reopened["deadline"]) > datetime.fromisoformat(deadline) - timedelta(seconds=60)
    run_worker(settings, backends)
    assert [t["state"] for t in client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()][-1] == "completed"


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_max_concurrent_trials_holds_under_concurrent_claims(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    limited = submit(client, quick_spec(search={**quick_spec()["search"], "n_trials": 6, "max_concurrent_trials": 2}))
    assert limited["max_concurrent_trials"] == 2
    free = submit(client, quick_spec(search={**quick_spec()["search"], "n_trials": 6}))
    lock = threading.Lock()

    def claim_round(n_threads: int) -> list[queue.Claim]:
        start = threading.Barrier(n_threads)
        got: list[queue.Claim] = []

        def one(i: int) -> None:
            start.wait()
            c = queue.claim(backends.sessions, f"w{i}", "cpu", 60)
            if c is not None:
                with lock:
                    got.append(c)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return got

    # Six claimers at once: two take the limited sweep's trials (its oldest), the others the unlimited sweep's.
    claimed = claim_round(6)
    by_sweep = {s: sorted(c.number for c in claimed if c.sweep_id == s) for s in (limited["id"], free["id"])}
    assert by_sweep[limited["id"]] == [0, 1] and len(by_sweep[free["id"]]) == 4, by_sweep
    assert not [c for c in claim_round(4) if c.sweep_id == limited["id"]]  # still at its limit
    # One finishes: exactly one more may start.
    first = min((c for c in claimed if c.sweep_id == limited["id"]), key=lambda c: c.number)
    written, _ = queue.finish(backends.sessions, first.row_id, _owner(backends, first.row_id), TrialState.completed)
    assert written
    again = [c for c in claim_round(3) if c.sweep_id == limited["id"]]
    assert [c.number for c in again] == [2]
    counts = client.get(f"/api/v1/sweeps/{limited['id']}").json()["counts"]
    assert counts["running"] == 2 and counts["completed"] == 1


def _owner(backends, trial_id: int) -> str:  # type: ignore[no-untyped-def]
    from server.core.models import Trial

    with backends.sessions() as session:
        return session.get_one(Trial, trial_id).worker_id or ""


@SQLITE
def test_max_concurrent_trials_through_workers(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    """Two worker threads on a sweep limited to one trial at a time: never two running, and all finish."""
    sweep = submit(client, quick_spec(train={"epochs": 2},
                                      search={**quick_spec()["search"], "n_trials": 4, "max_concurrent_trials": 1}))
    peak = [0]

    def watch(job, report):  # type: ignore[no-untyped-def]
        running = client.get(f"/api/v1/sweeps/{sweep['id']}").json()["counts"]["running"]
        peak[0] = max(peak[0], running)

    workers = [Worker(settings, WorkerOptions(device="cpu", burst=True, slot=i), backends=backends,
                      train=train_with_hook(settings, watch)) for i in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert peak[0] == 1
    got, trials, _ = three_places(client, backends, sweep["id"])
    assert got["state"] == "completed" and all(t["state"] == "completed" for t in trials)
    assert sum(w.trials_run for w in workers) == 4


# -- the spec ------------------------------------------------------------------------------------------------


def test_multi_objective_and_family_specs_are_checked_at_submission() -> None:
    from pydantic import ValidationError

    from server.core.spec import ExperimentSpec, SpecError, validate_plan
    from worker.catalog import WORKER_CATALOG

    families = {"name": "cnn", "arch": {}, "arch_by_model": {"cnn": {"width": 8}, "vit": {"patch_size": 4, "hidden_dim": 16}}}
    space = {"model.name": {"type": "categorical", "choices": ["cnn", "vit"]}}

    def spec(**search: Any) -> ExperimentSpec:
        return ExperimentSpec.model_validate(quick_spec(model=families, search={"n_trials": 2, "space": space, **search}))

    ok = spec(sampler="nsga2", metrics=["val_acc", "seconds_per_epoch"], directions=["maximize", "minimize"])
    assert ok.objectives == ["val_acc", "seconds_per_epoch"] and ok.metric == "val_acc" and ok.multi_objective
    validate_plan(ok, WORKER_CATALOG)  # builds the cnn and the vit on the meta device
    resolved = ok.resolve({"model.name": "vit"})
    assert resolved.model.arch == {"patch_size": 4, "hidden_dim": 16} and resolved.model.arch_by_model == {}
    assert resolved.objectives == ok.objectives  # a trial knows its sweep's objectives

    two = {"metrics": ["val_acc", "params"], "directions": ["maximize", "minimize"]}
    refused: list[tuple[dict[str, Any], str]] = [
        ({**two, "pruner": "median"}, "needs a single objective"),
        ({**two, "sampler": "cmaes"}, "cmaes sampler is single-objective"),
        ({"metrics": ["params", "val_acc"], "directions": ["minimize", "maximize"]}, "first metric is reported every epoch"),
        ({**two, "directions": ["maximize"]}, "one direction per metric"),
        ({"directions": ["maximize", "minimize"]}, "directions goes with metrics"),
        ({**two, "metric": "val_loss"}, "contradicts the first entry"),
        ({"timeout": 0}, "greater than 0"),
        ({"max_concurrent_trials": 0}, "greater than or equal to 1"),
    ]
    for search, message in refused:
        with pytest.raises(ValidationError, match=message):
            spec(**search)

    bad_block = quick_spec(model={**families, "arch_by_model": {**families["arch_by_model"], "mlp_mixer": {}}},
                           search={"n_trials": 2, "space": space})
    with pytest.raises(SpecError) as exc:
        validate_plan(ExperimentSpec.model_validate(bad_block), WORKER_CATALOG)
    assert exc.value.loc == ("model", "arch_by_model", "mlp_mixer")
    # A family's searched keyword is checked with that family chosen, at each bound.
    bad_range = quick_spec(model=families, search={"n_trials": 2, "space": {
        **space, "model.arch_by_model.vit.num_heads": {"type": "int", "low": 2, "high": 3}}})
    with pytest.raises(SpecError) as exc:
        validate_plan(ExperimentSpec.model_validate(bad_range), WORKER_CATALOG)
    assert exc.value.loc == ("search", "space", "model.arch_by_model.vit.num_heads")
    assert "vit" in exc.value.msg and "num_heads" in exc.value.msg
    with pytest.raises(SpecError, match="not a registered model"):
        validate_plan(ExperimentSpec.model_validate(quick_spec(search={"n_trials": 2, "space": {
            "model.arch_by_model.vitt.depth": {"type": "int", "low": 1, "high": 2}}})), WORKER_CATALOG)
    assert math.isclose(spec(timeout=90).timeout or 0, 90)

