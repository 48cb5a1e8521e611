"""Gathering a sweep's report from the three sources of truth: the SQL store (trials, values, summaries), MLflow
(per-epoch curves, read back: the store keeps no second copy) and Optuna (importances)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from server import compare
from server.core import studies, sweeps
from server.core.backends import Backends
from server.core.config import Settings
from server.core.models import Trial
from server.core.spec import ExperimentSpec
from server.report import figures
from server.report.figures import CURVE_METRICS, Figure, Histories

log = logging.getLogger(__name__)


@dataclass
class Report:
    """Everything a report shows, ready to render as HTML or Markdown."""

    sweep: dict[str, Any]
    rows: list[dict[str, Any]]
    figures: list[Figure]
    importances: dict[str, float] | None
    run_links: dict[int, str]
    sweep_run_link: str | None
    dashboard_link: str | None
    best_trial: int | None
    pareto_front: list[int] | None
    notes: list[str] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def build(backends: Backends, settings: Settings, sweep_id: int) -> Report:
    """Gather and draw a sweep's report.

    Raises:
        NotFoundError: no such sweep.
    """
    view = sweeps.get_sweep(backends.sessions, sweep_id)
    sweep = view.sweep
    spec = ExperimentSpec.model_validate(sweep.spec)
    trials = sweeps.list_trials(backends.sessions, sweep_id)
    rows = compare.rows(backends.sessions, [sweep_id])
    notes: list[str] = []

    experiment = sweep.mlflow_experiment_id
    mlflow_ui = settings.mlflow_ui.rstrip("/")
    run_links = {
        t.number: f"{mlflow_ui}/#/experiments/{experiment}/runs/{t.mlflow_run_id}" for t in trials if t.mlflow_run_id
    }
    sweep_run_link = f"{mlflow_ui}/#/experiments/{experiment}/runs/{sweep.mlflow_run_id}" if sweep.mlflow_run_id else None

    dashboard_link = None
    importances: dict[str, float] | None = None
    if sweep.study_name:
        try:
            dashboard_link = f"{settings.dashboard.rstrip('/')}/dashboard/studies/{studies.study_id(backends.storage, sweep.study_name)}"
            importances, why_not = studies.importances(backends.storage, sweep.study_name, multi_objective=spec.multi_objective)
            if why_not:
                notes.append(why_not)
        except Exception as exc:  # the report still shows what the store and MLflow hold
            notes.append(f"Optuna study {sweep.study_name!r} could not be loaded: {exc}")

    histories = _histories(backends, trials, spec.metric, notes)
    best = view.best.number if view.best is not None else None
    drawn: list[Figure] = []
    if any(histories.values()):
        drawn.append(figures.curves(trials, histories, spec.metric, best))
    else:
        notes.append("No trial has finished an epoch yet: no validation curves.")
    drawn.extend(figures.against_params(spec, trials, best))
    if spec.multi_objective:
        pareto = figures.pareto_figure(spec, trials, [t.number for t in view.pareto or []])
        if pareto is not None:
            drawn.append(pareto)
    if importances:
        drawn.append(figures.importance_figure(importances, spec.metric))

    info = {
        "id": sweep.id, "name": sweep.name, "state": sweep.state.value, "model": sweep.model, "dataset": sweep.dataset,
        "metric": sweep.metric, "direction": sweep.direction, "objectives": spec.objectives,
        "directions": spec.directions, "n_trials": sweep.n_trials, "counts": view.counts,
        "study_name": sweep.study_name, "description": spec.description,
        "best_value": view.best.value if view.best is not None else None,
        "best_params": view.best.params if view.best is not None else None,
    }
    return Report(
        sweep=info, rows=rows, figures=drawn, importances=importances, run_links=run_links,
        sweep_run_link=sweep_run_link, dashboard_link=dashboard_link, best_trial=best,
        pareto_front=[t.number for t in view.pareto] if view.pareto is not None else None, notes=notes,
    )


def _histories(backends: Backends, trials: Sequence[Trial], metric: str, notes: list[str]) -> Histories:
    """Per trial, per metric: (epoch, value) pairs, read back from the trial's MLflow run."""
    keys = list(dict.fromkeys([*CURVE_METRICS, metric]))
    out: Histories = {}
    for t in trials:
        if not t.mlflow_run_id:
            continue
        try:
            out[t.number] = backends.tracker.metric_history(t.mlflow_run_id, keys)
        except Exception as exc:
            notes.append(f"MLflow: could not read the curves of trial {t.number}: {exc}")
    return out
