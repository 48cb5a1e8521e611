"""Response schemas, one per entity (the request schema is ``server.core.spec.ExperimentSpec``).

Every shape is spelled out, so that a client generated from ``/openapi.json`` parses every answer, errors
included, into a typed model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.core.models import SweepState, TrialState
from server.core.objectives import Direction, EpochMetric, Objective
from server.core.spec import ExperimentSpec


class ErrorMessage(BaseModel):
    """An error answer (404, 409, 413, 415, 401, 503): ``{"detail": "..."}``, as FastAPI's own errors are."""

    detail: str = Field(description="What went wrong, naming the value.")


class TrialMetrics(BaseModel):
    """A trial's final figures (a pruned trial's are those of its last epochs). Figures a newer worker adds
    pass through as further keys."""

    model_config = ConfigDict(extra="allow")

    best_val_acc: float | None = None
    best_epoch: int | None = Field(None, description="The epoch of the best validation accuracy (from 1).")
    final_train_acc: float | None = None
    final_val_acc: float | None = None
    final_val_loss: float | None = None
    seconds_per_epoch: float | None = Field(None, description="Mean wall time of an epoch.")
    median_images_per_second: float | None = Field(None, description="Median training throughput over the epochs.")
    inputs_seen: int | None = Field(None, description="Training images seen over the whole trial.")
    param_count: int | None = Field(None, description="The model's parameters.")
    flops_per_image: float | None = Field(None, description="Forward FLOPs of one image.")
    peak_memory_bytes: int | None = Field(
        None, description="The trial's own peak memory: allocated by tensors on a GPU, the process's resident set "
        "while the trial ran on the CPU.")
    peak_memory_reserved_bytes: int | None = Field(
        None, description="GPU only: the trial's peak memory reserved by PyTorch's caching allocator.")
    mfu: float | None = Field(None, description="Model FLOPs utilisation against the GPU's dense peak.")
    svc_acc: float | None = Field(None, description="Accuracy of a linear SVC on the trained features.")
    objectives: dict[str, float] | None = Field(None, description="Multi-objective sweeps: every objective's value.")


class TrialCounts(BaseModel):
    """A sweep's trials by state."""

    model_config = ConfigDict(extra="forbid")

    queued: int = 0
    running: int = 0
    completed: int = 0
    pruned: int = 0
    failed: int = 0
    cancelled: int = 0


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
    metrics: TrialMetrics | None
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
    metric: EpochMetric
    direction: Direction
    objectives: list[Objective] = Field(description="Every objective, `metric` first (several for a multi-objective search).")
    directions: list[Direction]
    n_trials: int
    max_concurrent_trials: int | None = None
    deadline: datetime | None = Field(None, description="When queued trials are cancelled (search.timeout).")
    counts: TrialCounts
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
    spec: ExperimentSpec = Field(description="The spec as validated and stored (defaults filled in).")


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
    status: Literal["ok"]
    database: Literal["ok"]
    version: str


class CompareRow(BaseModel):
    """One trial in a comparison across sweeps (``GET /compare``'s JSON; CSV and Markdown carry the same columns)."""

    sweep_id: int
    sweep: str = Field(description="The sweep's name.")
    trial: int = Field(description="The trial's number in its sweep.")
    slug: str | None = Field(description="A grid point's name, e.g. num_layers-4_num_heads-8.")
    model: str
    dataset: str
    params_searched: dict[str, Any] = Field(description="The searched values by dotted path.")
    state: TrialState
    metric: str = Field(description="The sweep's (first) objective.")
    value: float | None = Field(description="The objective (best over epochs).")
    best_val_acc: float | None
    final_train_acc: float | None
    final_val_loss: float | None
    svc_acc: float | None
    param_count: int | None
    peak_memory_mb: float | None = Field(description="peak_memory_bytes in MiB.")
    peak_reserved_mb: float | None = Field(None, description="peak_memory_reserved_bytes in MiB (GPU only).")
    seconds_per_epoch: float | None
    median_images_per_second: float | None = Field(description="Median training throughput over the epochs.")
    epochs: int = Field(description="Epochs trained.")
    mlflow_run_id: str | None
    objectives: dict[str, float] | None = Field(description="Multi-objective sweeps: every objective's value.")
    error: str | None


class CatalogPublic(BaseModel):
    datasets: list[str] = Field(description="Dataset names a spec can give as dataset.name.")
    augments: list[str] = Field(description="Augmentation presets a spec can give as dataset.augment.")
    augment_presets: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Each preset's kornia ops at 32 px: {ops: [{KorniaClass: {...}}], ...}.")
    augment_ops: list[str] = Field(
        default_factory=list, description="kornia.augmentation classes a dataset.augment pipeline can name.")


class ModelInfo(BaseModel):
    name: str
    family: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    param_count: int | None = Field(None, description="Parameters at the asked input size.")
    error: str | None = None
