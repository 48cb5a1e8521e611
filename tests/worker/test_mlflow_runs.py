"""What an MLflow user finds of a sweep, read back with MLflow's own client: the experiment's kind (its runs
table, not the GenAI overview), each run's status, name and description by how its trial ended, its source
and user, summary figures apart from the step charts, system metrics, and the best checkpoint as a PyTorch
model that ``mlflow.pytorch.load_model`` loads. Optuna, read back too, holds the pruned trial's value."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import mlflow
import mlflow.pytorch
import optuna
import pytest
import torch

from tests.helpers import blind_client, quick_spec
from worker.exceptions import TrialPruned
from worker.training import SpecTrainer
from worker.worker import Worker, WorkerOptions


def _train(settings, client, sweep_id: int, tracking: Any):  # type: ignore[no-untyped-def]
    """The real training; trial 0 goes on from its first epoch once MLflow's system metrics monitor has logged
    for it (a trial on a fast machine can end before the first sample is due), trial 1 is pruned after
    reporting epoch 2 (as the pruner would), and the sweep is cancelled at trial 2's first epoch."""
    real = SpecTrainer(settings.datasets_dir, settings.download)

    def train(job: Any) -> Any:
        def on_epoch(report: Any) -> None:
            if job.claim.number == 0 and report.epoch == 1:
                run_id = client.get(f"/api/v1/sweeps/{sweep_id}/trials").json()[0]["mlflow_run_id"]
                deadline = time.monotonic() + 60
                while ("system/cpu_utilization_percentage" not in tracking.get_run(run_id).data.metrics
                       and time.monotonic() < deadline):
                    time.sleep(0.1)
            if job.claim.number == 2:
                client.post(f"/api/v1/sweeps/{sweep_id}/cancel")
            job.on_epoch(report)
            if job.claim.number == 1 and report.epoch == 2:
                raise TrialPruned(report.epoch)

        return real(replace(job, on_epoch=on_epoch))

    return train


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_runs_as_mlflow_users_expect_them(client, settings, backends, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = settings.model_copy(update={"system_metrics_seconds": 0.2})
    spec = quick_spec(train={"epochs": 3}, search={**quick_spec()["search"], "n_trials": 4})
    sweep = client.post("/api/v1/sweeps", json=spec, headers={"X-Vitsweep-User": "alice"}).json()
    broken = quick_spec(dataset={"name": "cifar10", "img_size": 8, "options": {}},
                        search={**quick_spec()["search"], "n_trials": 1})
    with blind_client(settings, backends) as blind:  # an API that cannot see the data queues it; the worker fails it
        failing = blind.post("/api/v1/sweeps", json=broken).json()
    Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends,
           train=_train(settings, client, sweep["id"], backends.tracker.client)).run()
    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert [t["state"] for t in trials] == ["completed", "pruned", "cancelled", "cancelled"], trials
    (failed,) = client.get(f"/api/v1/sweeps/{failing['id']}/trials").json()
    assert failed["state"] == "failed"

    tracking = backends.tracker.client
    experiment = tracking.get_experiment(sweep["mlflow_experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    runs = {t["number"]: tracking.get_run(t["mlflow_run_id"]) for t in trials[:3]}
    done, pruned, cancelled = runs[0], runs[1], runs[2]
    fail = tracking.get_run(failed["mlflow_run_id"])
    assert [r.info.status for r in (done, pruned, cancelled, fail)] == ["FINISHED", "FINISHED", "KILLED", "FAILED"]
    assert pruned.info.run_name.endswith(" (pruned)") and not done.info.run_name.endswith(")")
    assert "mlflow.note.content" not in done.data.tags
    assert pruned.data.tags["mlflow.note.content"].startswith("**pruned**")
    assert cancelled.data.tags["mlflow.note.content"] == "**cancelled**: sweep cancelled"
    assert "cifar" in fail.data.tags["mlflow.note.content"].lower()

    # Source and user: vitsweep and its version on every run; the submitter on the sweep's runs.
    from server.core.tracking import vitsweep_version

    parent = tracking.get_run(sweep["mlflow_run_id"])
    for run in (parent, done, pruned, cancelled):
        assert run.data.tags["mlflow.source.name"] == f"vitsweep {vitsweep_version()}"
        assert run.data.tags["mlflow.source.type"] == "JOB"
        assert run.data.tags["mlflow.user"] == "alice"
    assert "mlflow.user" not in fail.data.tags  # its client did not say who it was

    # Summary figures are summary/<name>: charted apart from the per-epoch curves, which keep one point per epoch.
    assert done.data.metrics["summary/best_val_acc"] == pytest.approx(trials[0]["metrics"]["best_val_acc"])
    assert "best_val_acc" not in done.data.metrics and "median_inputs_seen" not in done.data.metrics
    assert [m.step for m in tracking.get_metric_history(done.info.run_id, "images_per_second")] == [1, 2, 3]
    # MLflow's own system metrics, sampled while the trial ran.
    assert "system/cpu_utilization_percentage" in done.data.metrics, sorted(done.data.metrics)

    # The best checkpoint as a PyTorch model: mlflow.pytorch.load_model gives the best epoch's weights.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    loaded = mlflow.pytorch.load_model(f"runs:/{done.info.run_id}/model")
    best = torch.load(tracking.download_artifacts(done.info.run_id, "checkpoints/best.pt", str(settings.home)),
                      map_location="cpu", weights_only=True)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, best["model"][name]), name
    assert loaded(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
    assert mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")

    # Optuna: the pruned trial has a value (its last report), as Optuna's own tell(state=PRUNED) gives.
    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    by_number = {t.number: t for t in study.trials}
    told = by_number[trials[1]["optuna_trial_number"]]
    assert told.state == optuna.trial.TrialState.PRUNED
    assert told.value == told.intermediate_values[2]
    frame = study.trials_dataframe().set_index("number")
    assert frame.loc[told.number, "value_val_acc"] == told.value
