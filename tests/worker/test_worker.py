"""The worker path end to end: spec over HTTP -> claim -> Optuna ask -> train -> MLflow -> store.

Checked through the real readers: the MLflow client reads the nested runs and their metric history back,
Optuna loads the study, and the store's states and values must agree with both.
"""

from __future__ import annotations

import optuna
import pytest

from server.core import queue
from server.core.models import TrialState
from tests.helpers import blind_client, quick_spec, train_with_hook
from worker.worker import Worker, WorkerOptions

OPTUNA_STATE = {
    "completed": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "failed": optuna.trial.TrialState.FAIL,
}


def _run_worker(settings, backends, **kw) -> Worker:  # type: ignore[no-untyped-def]
    w = Worker(settings, WorkerOptions(device="cpu", burst=True, **kw), backends=backends)
    w.run()
    return w


def test_search_sweep_end_to_end(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(train={"epochs": 3, "plots": True})
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    worker = _run_worker(settings, backends)
    assert worker.trials_run == 3

    got = client.get(f"/api/v1/sweeps/{sweep['id']}").json()
    assert got["state"] == "completed"
    assert got["counts"]["completed"] == 3
    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    best = max(trials, key=lambda t: t["value"])
    assert got["best_trial"]["number"] == best["number"]

    # Optuna agrees with the store: same states, same values, same parameters.
    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    by_number = {t.number: t for t in study.trials}
    assert len(by_number) == 3
    for t in trials:
        ot = by_number[t["optuna_trial_number"]]
        assert ot.state == OPTUNA_STATE[t["state"]]
        assert ot.value == pytest.approx(t["value"])
        assert ot.params == t["params"]
        assert sorted(ot.intermediate_values) == [1, 2, 3]
        assert t["epochs_done"] == 3 and t["attempts"] == 1 and t["worker_id"] == worker.worker_id
        assert t["started_at"] <= t["finished_at"]

    # MLflow: one parent run, a nested run per trial, params once, per-epoch metrics with step, artifacts.
    mlflow = backends.tracker.client
    parent = mlflow.get_run(sweep["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best["value"])
    children = mlflow.search_runs(
        [backends.tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {r.info.run_id for r in children} == {t["mlflow_run_id"] for t in trials}
    for t in trials:
        run = mlflow.get_run(t["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["vitsweep.state"] == "completed"
        assert float(run.data.params["train.lr"]) == pytest.approx(t["params"]["train.lr"])
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            history = mlflow.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == [1, 2, 3], key
        assert [m.value for m in mlflow.get_metric_history(run.info.run_id, "val_acc")][-1] == pytest.approx(
            t["metrics"]["final_val_acc"] if "final_val_acc" in t["metrics"] else t["value"], abs=1.0
        )
        files = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
        assert {"spec.yaml", "checkpoints", "plots"} <= files
        ckpts = {a.path for a in mlflow.list_artifacts(run.info.run_id, "checkpoints")}
        assert {"checkpoints/best.pt", "checkpoints/last.pt"} <= ckpts


def test_matrix_sweep_uses_fixed_values(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(search=None, matrix={"train.lr": [0.001, 0.01], "train.batch_size": [16, 32]})
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    _run_worker(settings, backends)
    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert [t["state"] for t in trials] == ["completed"] * 4
    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    assert sorted((t.params["train.lr"], t.params["train.batch_size"]) for t in study.trials) == [
        (0.001, 16), (0.001, 32), (0.01, 16), (0.01, 32)
    ]
    for t in trials:
        run = backends.tracker.client.get_run(t["mlflow_run_id"])
        assert int(run.data.params["train.batch_size"]) == t["params"]["train.batch_size"]
        assert t["slug"] in run.info.run_name


def test_matrix_points_and_a_single_run_train_as_written(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    include = [{"train.lr": 0.01, "train.batch_size": 16}, {"model": {"name": "cnn", "arch": {"width": 8}}}]
    points = client.post("/api/v1/sweeps", json=quick_spec(search=None, matrix={"include": include})).json()
    # a single run (no search, no matrix), of a CNN with a spatial transformer in front
    one = quick_spec(name="one-run", search=None, dataset={"img_size": 16}, model={"name": "cnn", "stn": True},
                     train={"plots": True})
    single = client.post("/api/v1/sweeps", json=one).json()
    _run_worker(settings, backends)
    trials = client.get(f"/api/v1/sweeps/{points['id']}/trials").json()
    assert [t["state"] for t in trials] == ["completed"] * 2
    # each trial ran with its own point only: the first kept the spec's cnn, the second its model block
    assert trials[0]["metrics"]["param_count"] != trials[1]["metrics"]["param_count"]
    study = optuna.load_study(study_name=points["study_name"], storage=backends.storage)
    assert [sorted(t.params) for t in sorted(study.trials, key=lambda t: t.number)] == [
        ["train.batch_size", "train.lr"], ["model"]]
    run = backends.tracker.client.get_run(trials[1]["mlflow_run_id"])
    assert run.data.params["model.arch.width"] == "8"
    (trial,) = client.get(f"/api/v1/sweeps/{single['id']}/trials").json()
    assert trial["state"] == "completed" and trial["value"] is not None, trial["error"]
    assert client.get(f"/api/v1/sweeps/{single['id']}").json()["state"] == "completed"
    plots = {a.path for a in backends.tracker.client.list_artifacts(trial["mlflow_run_id"], "plots")}
    assert "plots/stn.png" in plots, plots


def test_invalid_data_fails_trial_without_retry(settings, backends) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(dataset={"name": "cifar10", "img_size": 8, "options": {}}, search={**quick_spec()["search"], "n_trials": 1})
    with blind_client(settings, backends) as client:  # an API that cannot see the data queues it; the worker finds out
        _invalid_data_fails_trial_without_retry(client, settings, backends, spec)


def _invalid_data_fails_trial_without_retry(client, settings, backends, spec) -> None:  # type: ignore[no-untyped-def]
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    _run_worker(settings, backends)
    (trial,) = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert trial["state"] == "failed" and trial["attempts"] == 1
    assert "cifar-10" in trial["error"].lower()
    run = backends.tracker.client.get_run(trial["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["vitsweep.state"] == "failed"
    assert "cifar" in run.data.tags["vitsweep.error"].lower()
    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert client.get(f"/api/v1/sweeps/{sweep['id']}").json()["state"] == "completed"


def test_cancel_reaches_running_trial(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(train={"epochs": 50}, search={**quick_spec()["search"], "n_trials": 2})
    sweep = client.post("/api/v1/sweeps", json=spec).json()

    def cancel_after_two(job, report):  # type: ignore[no-untyped-def]
        if report.epoch == 2:
            client.post(f"/api/v1/sweeps/{sweep['id']}/cancel")

    worker = Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends,
                    train=train_with_hook(settings, cancel_after_two))
    worker.run()
    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert trials[0]["state"] == "cancelled" and trials[0]["epochs_done"] == 2
    assert trials[1]["state"] == "cancelled" and trials[1]["attempts"] == 0
    run = backends.tracker.client.get_run(trials[0]["mlflow_run_id"])
    assert run.info.status == "KILLED"


def test_expired_lease_is_requeued_then_failed(settings, backends, client) -> None:  # type: ignore[no-untyped-def]
    sweep = client.post("/api/v1/sweeps", json=quick_spec(search={**quick_spec()["search"], "n_trials": 1})).json()
    for attempt in range(1, settings.max_attempts + 1):
        claim = queue.claim(backends.sessions, "dead-worker", "cpu", lease_seconds=-1)  # born expired
        assert claim is not None and claim.attempts == attempt
        failed = queue.reap_expired(backends.sessions, settings.max_attempts)
        assert bool(failed) == (attempt == settings.max_attempts)
    (trial,) = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert trial["state"] == TrialState.failed.value and "lease expired" in trial["error"]
    assert queue.claim(backends.sessions, "w", "cpu", 60) is None


EPOCH_METRICS = {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "images_per_second",
                 "data_wait"}
SUMMARY_METRICS = {"best_val_acc", "best_epoch", "svc_acc", "param_count", "peak_memory_bytes", "flops_per_image",
                   "final_train_acc", "final_val_loss", "seconds_per_epoch", "median_images_per_second"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_trial_run_holds_every_figure_and_artifact(client, settings, backends, tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = {
        "name": "stn-digits",
        "dataset": {"name": "digits", "img_size": 16, "augment": "standard"},
        "model": {"name": "vit_stn", "arch": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}},
        "train": {"epochs": 2, "batch_size": 64, "lr": 2e-3},
        "matrix": {"train.seed": [0]},
    }
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    _run_worker(settings, backends)
    (trial,) = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert trial["state"] == "completed", trial["error"]
    mlflow = backends.tracker.client
    run = mlflow.get_run(trial["mlflow_run_id"])
    for key in EPOCH_METRICS:
        assert [m.step for m in mlflow.get_metric_history(run.info.run_id, key)] == [1, 2], key
    # End-of-trial figures are summary/<name> in MLflow (a chart section of their own), <name> in the store.
    summary = {k.removeprefix("summary/"): v for k, v in run.data.metrics.items() if k.startswith("summary/")}
    assert SUMMARY_METRICS <= set(summary), SUMMARY_METRICS - set(summary)
    assert not SUMMARY_METRICS & set(run.data.metrics)  # none among the per-epoch charts
    assert summary["inputs_seen"] == trial["metrics"]["inputs_seen"]  # the running total's end, one name
    assert SUMMARY_METRICS <= set(trial["metrics"])  # the store holds the same figures for comparisons
    assert summary["param_count"] == trial["metrics"]["param_count"] > 0
    assert 0.0 <= summary["svc_acc"] <= 1.0 and summary["flops_per_image"] > 0
    plots = {a.path for a in mlflow.list_artifacts(run.info.run_id, "plots")}
    assert {f"plots/{n}.png" for n in ("curves", "confusion_matrix", "misclassified", "stn")} <= plots
    local = mlflow.download_artifacts(run.info.run_id, "plots", str(tmp_path))
    for name in ("curves", "confusion_matrix", "misclassified", "stn"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", local
    ckpt = mlflow.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(tmp_path))
    import torch

    assert "model" in torch.load(ckpt, map_location="cpu", weights_only=True)
    assert "spec.yaml" in {a.path for a in mlflow.list_artifacts(run.info.run_id)}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_lease_outlives_slow_phases_outside_epochs(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    """A resume download before the first epoch and uploads after the last can outlast a short lease: the
    lease keeper renews it throughout, so a reaper running meanwhile finds nothing to take."""
    import time

    settings = settings.model_copy(update={"lease_seconds": 1.0, "heartbeat_seconds": 0.2})
    sweep = client.post("/api/v1/sweeps", json=quick_spec(search={**quick_spec()["search"], "n_trials": 1})).json()
    worker = Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends)
    reaped: list[object] = []

    def slow_then_reap(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(3 * settings.lease_seconds)  # three leases with no epoch callback
        reaped.extend(queue.reap_expired(backends.sessions, settings.max_attempts))
        return queue.claim(backends.sessions, "thief", "cpu", 60)

    resume_point, log_summary = worker.runner._resume_point, backends.tracker.log_summary
    stolen: list[object] = []

    def resume_point_slowly(ctx, workdir):  # type: ignore[no-untyped-def]
        stolen.append(slow_then_reap())
        return resume_point(ctx, workdir)

    def log_summary_slowly(*args, **kwargs):  # type: ignore[no-untyped-def]
        stolen.append(slow_then_reap())
        return log_summary(*args, **kwargs)

    worker.runner._resume_point = resume_point_slowly  # type: ignore[method-assign]
    backends.tracker.log_summary = log_summary_slowly  # type: ignore[method-assign]
    assert worker.run() == 1
    assert stolen == [None, None] and reaped == []
    (trial,) = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert trial["state"] == "completed" and trial["attempts"] == 1, trial


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_svc_probe_every_epoch_is_an_mlflow_metric(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    """svc_probe: {every: 1}: the real worker logs svc_acc at every epoch's step; the summary's is the last one's."""
    spec = quick_spec(train={"epochs": 3, "svc_probe": {"every": 1, "samples": 32}}, search=None,
                      matrix={"train.seed": [0]})
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    _run_worker(settings, backends)
    (trial,) = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert trial["state"] == "completed", trial["error"]
    mlflow = backends.tracker.client
    history = mlflow.get_metric_history(trial["mlflow_run_id"], "svc_acc")
    assert [m.step for m in history] == [1, 2, 3] and all(0.0 <= m.value <= 1.0 for m in history)
    run = mlflow.get_run(trial["mlflow_run_id"])
    assert run.data.metrics["summary/svc_acc"] == history[-1].value == trial["metrics"]["svc_acc"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cpu_peak_memory_is_each_trials_own(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    """Two trials in one slot process, the first with ~70x the activations of the second: the second's peak is
    its own, not the first's high-water mark (which the process's ru_maxrss would still report)."""
    spec = quick_spec(
        dataset={"options": {"num_samples": 640, "num_classes": 4}}, search=None,
        matrix={"include": [{"dataset.img_size": 64, "train.batch_size": 512},
                            {"dataset.img_size": 8, "train.batch_size": 32}]},
    )
    sweep = client.post("/api/v1/sweeps", json=spec)
    assert sweep.status_code == 201, sweep.text
    _run_worker(settings, backends, max_trials=1)  # the big one first, then the small one in the same process
    _run_worker(settings, backends)
    big, small = client.get(f"/api/v1/sweeps/{sweep.json()['id']}/trials").json()
    assert (big["state"], small["state"]) == ("completed", "completed"), (big["error"], small["error"])
    assert big["params"]["dataset.img_size"] == 64
    first, second = big["metrics"]["peak_memory_bytes"], small["metrics"]["peak_memory_bytes"]
    assert first > second + 200 * 2**20, (first / 2**20, second / 2**20)
    assert second > 50 * 2**20  # the process's resident set, interpreter and libraries included


def test_compile_cache_is_shared_under_home(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    from worker.worker import share_compile_cache

    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    assert share_compile_cache(tmp_path) == tmp_path / "cache" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "cache" / "inductor" / "triton")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's choice wins
    assert share_compile_cache(tmp_path / "other") == tmp_path / "mine"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_torch_named_training_without_validation_end_to_end(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    """A grid over a torch block's keyword, no validation split, a step budget: the real worker trains it, Optuna
    and the store take train_acc as the objective, MLflow holds training metrics only."""
    spec = quick_spec(
        dataset={"normalize": {"mean": [0.5], "std": [0.5]}, "val_fraction": 0},
        train={"optimizer": {"name": "SGD", "momentum": 0.9}, "lr": 0.05, "max_steps": 3, "epochs": 50,
               "scheduler": {"name": "OneCycleLR", "anneal_strategy": "linear"}, "svc_probe": True},
        search=None, matrix={"train.optimizer.nesterov": [False, True]},
    )
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    assert sweep["metric"] == "train_acc"
    _run_worker(settings, backends)
    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert [t["state"] for t in trials] == ["completed"] * 2, [t["error"] for t in trials]
    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    mlflow = backends.tracker.client
    for t in trials:
        run = mlflow.get_run(t["mlflow_run_id"])
        # 64 synthetic samples, all trained on, in batches of 32: 2 steps per epoch, the 3-step budget in 2 epochs.
        assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "train_acc")] == [1, 2]
        assert run.data.metrics["inputs_seen"] == 3 * 32
        assert not any(k.startswith("val_") for k in run.data.metrics) and "svc_acc" not in run.data.metrics
        assert run.data.params["train.optimizer.nesterov"] == str(t["params"]["train.optimizer.nesterov"]).lower()
        best = max(m.value for m in mlflow.get_metric_history(run.info.run_id, "train_acc"))
        assert t["value"] == pytest.approx(best)
        (ot,) = [o for o in study.trials if o.number == t["optuna_trial_number"]]
        assert ot.value == pytest.approx(best)


def test_best_checkpoint_follows_a_minimised_objective(client, settings, backends, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A sweep minimising val_loss keeps the weights of its lowest-val_loss epoch as best.pt, not those of its
    best val_acc (on this noisy task, high learning rate, the two epochs differ)."""
    import torch

    spec = quick_spec(
        name="min-loss",
        dataset={"name": "synthetic", "img_size": 8, "options": {"num_samples": 256, "num_classes": 4, "noise": 3.0}},
        train={"epochs": 8, "lr": 0.03},
        search={"sampler": "random", "n_trials": 1, "metric": "val_loss", "direction": "minimize",
                "space": {"train.lr": {"type": "categorical", "choices": [0.03]}}},
    )
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends).run()
    (trial,) = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert trial["state"] == "completed", trial
    mlflow = backends.tracker.client
    losses = {m.step: m.value for m in mlflow.get_metric_history(trial["mlflow_run_id"], "val_loss")}
    accs = {m.step: m.value for m in mlflow.get_metric_history(trial["mlflow_run_id"], "val_acc")}
    lowest = min(losses, key=lambda step: losses[step])
    assert max(accs, key=lambda step: accs[step]) != lowest, (losses, accs)  # the test tells the two apart
    best = torch.load(mlflow.download_artifacts(trial["mlflow_run_id"], "checkpoints/best.pt", str(tmp_path)),
                      weights_only=True)
    assert best["epoch"] == lowest and best["metrics"]["val_loss"] == pytest.approx(losses[lowest])
    assert trial["value"] == pytest.approx(losses[lowest])
