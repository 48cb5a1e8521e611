"""The ``search`` section: an Optuna study over a space of dotted paths, its sampler, pruner and objectives."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from server.core.objectives import EPOCH_METRICS, OBJECTIVE_ALIASES, Direction, EpochMetric, Objective
from server.core.samplers import PrunerName, SamplerName
from server.core.spec.limits import MAX_LIST, MAX_TRIALS, check_mapping, check_value
from server.core.spec.sections import Strict

Sampler = SamplerName
Pruner = PrunerName


class FloatParam(Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got low={self.low}, high={self.high}")
        if self.low >= self.high:
            raise ValueError(f"low must be below high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self


class IntParam(Strict):
    type: Literal["int"]
    low: int = Field(ge=-(2**53), le=2**53)
    high: int = Field(ge=-(2**53), le=2**53)
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low must not exceed high, got low={self.low}, high={self.high}")
        if self.log and self.low < 1:
            raise ValueError(f"a log-scale range needs low >= 1, got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError("step and log cannot be combined")
        return self


class CategoricalParam(Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1, max_length=MAX_LIST)

    @field_validator("choices")
    @classmethod
    def _bounded_choices(cls, value: list[Any]) -> list[Any]:
        for i, choice in enumerate(value):
            check_value(choice, f"choices[{i}]")
        return value


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


def first_value(dist: FloatParam | IntParam | CategoricalParam) -> Any:
    """The point a space's checks start from: the first choice, or the low bound."""
    return dist.choices[0] if isinstance(dist, CategoricalParam) else dist.low


class SearchSpec(Strict):
    sampler: Sampler = "tpe"
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    n_trials: int = Field(ge=1, le=MAX_TRIALS)
    metric: EpochMetric = "val_acc"
    direction: Direction = "maximize"
    metrics: list[Objective] | None = Field(
        None, min_length=2, max_length=4,
        description="Several objectives (a multi-objective search, e.g. [val_acc, param_count]); the first is a per-epoch "
        "metric and is the store's value; `metric` is set from it.",
    )
    directions: list[Direction] | None = Field(None, description="One direction per entry of `metrics`.")
    pruner: Pruner = "none"
    pruner_options: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] = Field(max_length=64)
    timeout: float | None = Field(
        None, gt=0, le=366 * 86400,
        description="Seconds after submission when queued trials are cancelled; running trials finish.",
    )
    max_concurrent_trials: int | None = Field(None, ge=1, le=MAX_TRIALS, description="At most this many trials run at once.")

    @field_validator("metrics", mode="before")
    @classmethod
    def _renamed_objectives(cls, value: Any) -> Any:
        """Specs written before an objective was renamed keep working (``params`` is ``param_count``)."""
        if isinstance(value, list):
            return [OBJECTIVE_ALIASES.get(v, v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("sampler_options", "pruner_options")
    @classmethod
    def _bounded_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return check_mapping(value, info.field_name or "options")

    @field_validator("space")
    @classmethod
    def _non_empty(cls, value: dict[str, Param]) -> dict[str, Param]:
        if not value:
            raise ValueError("the search space is empty; give at least one parameter, or use a matrix")
        return value

    @model_validator(mode="after")
    def _objectives(self) -> SearchSpec:
        if self.metrics is None:
            if self.directions is not None:
                raise ValueError("directions goes with metrics (a multi-objective search); use direction for one metric")
            return self
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics must not repeat, got {self.metrics}")
        if self.directions is None or len(self.directions) != len(self.metrics):
            raise ValueError(f"give one direction per metric, got metrics={self.metrics} and directions={self.directions}")
        first = self.metrics[0]
        if first not in EPOCH_METRICS:
            raise ValueError(
                f"the first metric is reported every epoch and must be one of {', '.join(EPOCH_METRICS)}, got {first!r}"
            )
        for name, value, wanted in (("metric", self.metric, first), ("direction", self.direction, self.directions[0])):
            if name in self.model_fields_set and value != wanted:
                raise ValueError(f"{name}={value!r} contradicts the first entry of {name}s ({wanted!r}); give one or the other")
        self.metric, self.direction = first, self.directions[0]  # type: ignore[assignment]
        if self.pruner != "none":
            raise ValueError(
                f"pruner {self.pruner!r} needs a single objective: Optuna prunes on per-epoch reports, which "
                "multi-objective studies do not take; use pruner: none"
            )
        if self.sampler == "cmaes":
            raise ValueError("the cmaes sampler is single-objective; use nsga2, tpe, gp or random for several metrics")
        return self

    @model_validator(mode="after")
    def _grid_is_categorical(self) -> SearchSpec:
        if self.sampler == "grid":
            bad = [p for p, d in self.space.items() if not isinstance(d, CategoricalParam)]
            if bad:
                raise ValueError(f"the grid sampler takes categorical parameters only, got others for {bad}")
        return self
