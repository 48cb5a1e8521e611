"""``ExperimentSpec``: the whole spec, with the views the store, the studies and the worker read off it.

A spec holds a ``search`` (an Optuna study over ``space``), a ``matrix`` (its points, one trial each: see
``matrix``), or neither (a single run). Both address fields by dotted paths such as ``train.lr`` or
``model.arch.num_layers``.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from server.core.exceptions import SpecError
from server.core.objectives import Direction
from server.core.spec import matrix as matrices
from server.core.spec.limits import MAX_TRIALS
from server.core.spec.paths import set_path
from server.core.spec.search import CategoricalParam, SearchSpec
from server.core.spec.sections import DatasetSpec, ModelSpec, Strict, TrainSpec, error_at
from server.core.spec.torchnames import MONITOR_DEFAULT, PLATEAU

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# What a trial without a validation split (val_fraction: 0) cannot report.
NEEDS_VALIDATION = ("val_acc", "val_loss", "svc_acc")


class ExperimentSpec(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=4096)
    dataset: DatasetSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=lambda: TrainSpec())
    search: SearchSpec | None = None
    matrix: dict[str, Any] | None = Field(
        None,
        description="Paths mapped to lists (their product), with GitHub Actions' include and exclude lists of points.",
    )

    @field_validator("matrix")
    @classmethod
    def _matrix_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else matrices.check_matrix(value)

    @model_validator(mode="after")
    def _one_plan(self) -> ExperimentSpec:
        if self.search is not None and self.matrix is not None:
            raise ValueError("give at most one of 'search' or 'matrix' (neither: a single run)")
        if self.search is not None and self.search.sampler == "grid":  # counted before any combination is made
            sizes = [len(v) for v in self.grid_axes().values()]  # (a matrix is counted by check_matrix)
            if math.prod(sizes) > MAX_TRIALS:
                raise ValueError(
                    f"the grid search's space has more than {MAX_TRIALS} combinations: "
                    f"{' x '.join(map(str, sizes))} = {math.prod(sizes)}, one trial each"
                )
        return self

    @model_validator(mode="after")
    def _train_metrics_without_validation(self) -> ExperimentSpec:
        """With ``val_fraction: 0`` there is no validation split: objectives and the plateau's monitor must be
        training metrics."""
        if self.dataset.val_fraction != 0:
            return self
        hint = "; with dataset.val_fraction: 0 there is no validation split, use train_acc or train_loss"
        if self.search is not None:
            field = "metrics" if self.search.metrics else "metric"
            bad = [m for m in self.objectives if m in NEEDS_VALIDATION]
            if bad:
                raise error_at(("search", field), f"{field} {', '.join(bad)} needs validation{hint}", bad[0])
        block = self.train.scheduler
        if isinstance(block, str) or block.name != PLATEAU:
            return self
        monitor = block.keywords.get("monitor", MONITOR_DEFAULT)
        if monitor in NEEDS_VALIDATION:
            raise error_at(("train", "scheduler", "monitor"), f"ReduceLROnPlateau monitors {monitor}{hint}", monitor)
        return self

    # -- derived views ------------------------------------------------------------------------------------

    @property
    def metric(self) -> str:
        """The (first) objective: a search's, else validation accuracy (training accuracy without validation)."""
        if self.search:
            return self.search.metric
        return "train_acc" if self.dataset.val_fraction == 0 else "val_acc"

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
        """Grids (a matrix, the grid sampler, or a single run) fix every trial's values when the sweep is
        created."""
        return self.search is None or self.search.sampler == "grid"

    def grid_axes(self) -> dict[str, list[Any]]:
        """Every path a grid sets, with the distinct values its points give it (Optuna's distributions)."""
        if self.search is not None:
            return {p: list(d.choices) for p, d in self.search.space.items() if isinstance(d, CategoricalParam)}
        out: dict[str, dict[str, Any]] = {}
        for point in self.grid_points():
            for path, value in point.items():
                out.setdefault(path, {}).setdefault(json.dumps(value, sort_keys=True), value)
        return {p: list(values.values()) for p, values in out.items()}

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the grid, in a stable order (a single run is one empty point)."""
        return [point for point, _ in self.grid_origins()]

    def grid_origins(self) -> list[tuple[dict[str, Any], int | None]]:
        """Every point of the grid with the matrix ``include`` entry that made it (None: a combination)."""
        if self.matrix is not None:
            return matrices.expand(self.matrix)
        if self.search is None:
            return [({}, None)]
        axes = self.grid_axes()
        return [(dict(zip(axes, combo, strict=True)), None) for combo in itertools.product(*axes.values())]

    def planned_trials(self) -> int:
        """How many trials the plan makes, counted without making them."""
        if self.matrix is not None:
            return len(matrices.expand(self.matrix))
        if self.search is None:
            return 1
        if self.search.sampler == "grid":
            return math.prod(len(v) for v in self.grid_axes().values())
        return self.search.n_trials

    def searched_paths(self) -> list[str]:
        """The dotted paths the plan varies: the matrix's paths or the search space's parameters."""
        if self.matrix is not None:
            return matrices.paths(self.matrix)
        return list(self.search.space) if self.search is not None else []

    def plan_loc(self, path: str, origin: int | None = None) -> tuple[str | int, ...]:
        """Where ``path`` is written in this spec: ``("matrix", path)``, ``("matrix", "include", i, path)`` for
        the ``include`` entry ``origin``, or ``("search", "space", path)``."""
        if self.matrix is not None:
            if origin is not None and path in self.matrix.get(matrices.INCLUDE, [])[origin]:
                return ("matrix", matrices.INCLUDE, origin, path)
            return ("matrix", path)
        return ("search", "space", path)

    def resolve(self, params: dict[str, Any]) -> ExperimentSpec:
        """This spec with the trial's ``params`` (dotted paths) written in; validated again.

        The chosen model's ``arch_by_model`` block is merged into ``model.arch`` (and the blocks dropped), so a
        resolved spec is one plain trial. It keeps ``search``: a trial needs its sweep's objectives.
        """
        data = self.model_dump(mode="json", exclude={"matrix"})
        for path, value in params.items():
            try:
                set_path(data, path, value)
            except ValueError as exc:
                raise SpecError(self.plan_loc(path), f"{exc}; give that section as a block, e.g. "
                                "train.optimizer: {name: AdamW}, to search its keywords") from None
        model = data["model"]
        by_model = model.pop("arch_by_model", None) or {}
        if isinstance(model.get("arch"), dict):
            model["arch"] = {**model["arch"], **(by_model.get(model.get("name")) or {})}
        resolved = ExperimentSpec.model_validate(data)
        resolved.matrix = None
        return resolved
