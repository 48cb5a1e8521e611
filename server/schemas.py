"""Response schemas, one per entity (the request schema is ``server.core.spec.ExperimentSpec``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.core.models import SweepState, TrialState


class TrialPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sweep_id: int
    number: int
    slug: str | None
    state: TrialState
    params: dict[str, Any] | None
    value: float | None = Field(description="The sweep's objective (best over epochs).")
    epochs_done: int
    metrics: dict[str, Any] | None
    error: str | None
    optuna_trial_number: int | None
    mlflow_run_id: str | None
    worker_id: str | None
    device: str | None
    attempts: int
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class SweepPublic(BaseModel):
    id: int
    name: str
    state: SweepState
    model: str
    dataset: str
    metric: str
    direction: str
    objectives: list[str] = Field(description="Every objective, `metric` first (several for a multi-objective search).")
    directions: list[str]
    n_trials: int
    max_concurrent_trials: int | None = None
    deadline: datetime | None = Field(None, description="When queued trials are cancelled (search.timeout).")
    counts: dict[str, int] = Field(description="Trials by state.")
    best_trial: TrialPublic | None = Field(None, description="The completed trial best on the first objective.")
    pareto_front: list[int] | None = Field(
        None, description="Multi-objective sweeps: numbers of the completed trials no other trial beats on every objective."
    )
    study_name: str | None
    mlflow_experiment_id: str | None
    mlflow_run_id: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    spec: dict[str, Any] | None = None


class TrialsAdd(BaseModel):
    """Request to queue more trials of a search."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, le=10_000, description="How many trials to add.")


class SweepPage(BaseModel):
    items: list[SweepPublic]
    total: int
    limit: int
    offset: int


class Health(BaseModel):
    status: str
    database: str
    version: str


class CatalogPublic(BaseModel):
    datasets: list[str] = Field(description="Dataset names a spec can give as dataset.name.")
    augments: list[str] = Field(description="Augmentation presets a spec can give as dataset.augment.")


class ModelInfo(BaseModel):
    name: str
    family: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    param_count: int | None = Field(None, description="Parameters at the asked input size.")
    error: str | None = None
