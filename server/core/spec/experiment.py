"""``ExperimentSpec``: the whole spec, with the views the store, the studies and the worker read off it.

A spec holds either a ``search`` (an Optuna study over ``space``) or a ``matrix`` (every combination one
trial). Both address fields by dotted paths such as ``train.lr`` or ``model.arch.num_layers``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from server.core.objectives import Direction
from server.core.spec.limits import MAX_LIST, MAX_TRIALS, check_value
from server.core.spec.paths import set_path
from server.core.spec.search import CategoricalParam, SearchSpec
from server.core.spec.sections import DatasetSpec, ModelSpec, Strict, TrainSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ExperimentSpec(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=4096)
    dataset: DatasetSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=lambda: TrainSpec())
    search: SearchSpec | None = None
    matrix: dict[str, list[Any]] | None = Field(None, max_length=16)

    @field_validator("matrix")
    @classmethod
    def _matrix_lists(cls, value: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("the matrix is empty; give at least one path with a list of values")
        for path, values in value.items():
            if not values:
                raise ValueError(f"matrix entry {path!r} is an empty list; give at least one value")
            if len(values) > MAX_LIST:
                raise ValueError(f"matrix entry {path!r} has {len(values)} values, at most {MAX_LIST}")
            for i, item in enumerate(values):
                check_value(item, f"{path}[{i}]")
        return value

    @model_validator(mode="after")
    def _one_plan(self) -> ExperimentSpec:
        if (self.search is None) == (self.matrix is None):
            raise ValueError("give exactly one of 'search' or 'matrix'")
        if self.is_grid:  # counted from the axes' lengths, before any combination is built
            sizes = [len(v) for v in self.grid_axes().values()]
            if math.prod(sizes) > MAX_TRIALS:
                plan = "the matrix" if self.matrix is not None else "the grid search's space"
                raise ValueError(
                    f"{plan} has more than {MAX_TRIALS} combinations: {' x '.join(map(str, sizes))} = "
                    f"{math.prod(sizes)}, one trial each"
                )
        return self

    # -- derived views ------------------------------------------------------------------------------------

    @property
    def metric(self) -> str:
        return self.search.metric if self.search else "val_acc"

    @property
    def direction(self) -> Direction:
        return self.search.direction if self.search else "maximize"

    @property
    def objectives(self) -> list[str]:
        """Every objective, the first being ``metric``."""
        return list(self.search.metrics) if self.search and self.search.metrics else [self.metric]

    @property
    def directions(self) -> list[Direction]:
        return list(self.search.directions) if self.search and self.search.directions else [self.direction]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def timeout(self) -> float | None:
        return self.search.timeout if self.search else None

    @property
    def max_concurrent_trials(self) -> int | None:
        return self.search.max_concurrent_trials if self.search else None

    @property
    def is_grid(self) -> bool:
        """Grids (a matrix, or the grid sampler) fix every trial's values when the sweep is created."""
        return self.matrix is not None or (self.search is not None and self.search.sampler == "grid")

    def grid_axes(self) -> dict[str, list[Any]]:
        if self.matrix is not None:
            return self.matrix
        assert self.search is not None
        return {p: list(d.choices) for p, d in self.search.space.items() if isinstance(d, CategoricalParam)}

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid, in a stable order."""
        axes = self.grid_axes()
        return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]

    def planned_trials(self) -> int:
        if self.is_grid:
            return math.prod(len(v) for v in self.grid_axes().values())
        assert self.search is not None
        return self.search.n_trials

    def searched_paths(self) -> list[str]:
        """The dotted paths the plan varies: the matrix's axes or the search space's parameters."""
        return list(self.matrix) if self.matrix is not None else list(self.search.space)  # type: ignore[union-attr]

    def plan_loc(self, path: str) -> tuple[str, ...]:
        """Where ``path`` is written in this spec: ``("matrix", path)`` or ``("search", "space", path)``."""
        return ("matrix", path) if self.matrix is not None else ("search", "space", path)

    def resolve(self, params: dict[str, Any]) -> ExperimentSpec:
        """This spec with the trial's ``params`` (dotted paths) written in; validated again.

        The chosen model's ``arch_by_model`` block is merged into ``model.arch`` (and the blocks dropped), so a
        resolved spec is one plain trial. It keeps ``search``: a trial needs its sweep's objectives.
        """
        data = self.model_dump(mode="json", exclude={"matrix"})
        for path, value in params.items():
            set_path(data, path, value)
        model = data["model"]
        by_model = model.pop("arch_by_model", None) or {}
        if isinstance(model.get("arch"), dict):
            model["arch"] = {**model["arch"], **(by_model.get(model.get("name")) or {})}
        if data.get("search") is None:
            data["matrix"] = {"_": [0]}  # resolved specs are single trials; keep the one-plan rule satisfied
        resolved = ExperimentSpec.model_validate(data)
        resolved.matrix = None
        return resolved
