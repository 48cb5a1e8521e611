"""The experiment spec: what a user submits, validated once at the boundary.

A spec is declarative. Names (models, datasets, augmentations) resolve through registries and nothing in it
is executed. A spec holds either a ``search`` (an Optuna study over ``space``) or a ``matrix`` (every
combination one trial). Both address fields by dotted paths such as ``train.lr`` or ``model.arch.num_layers``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Callable
from pathlib import PureWindowsPath
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
SECTIONS = ("dataset", "model", "train")
MAX_TRIALS = 10_000
MAX_EPOCHS = 10_000
MAX_LIST = 256
MAX_STR = 256
MAX_TEXT = 4096  # the longest string anywhere in a spec (the description)
MAX_KEYS = 64  # entries of one free-form mapping (arch, options, sampler_options, ...)
MAX_DEPTH = 4  # nesting of values inside a free-form mapping or a list of choices
MAX_NODES = 20_000  # values in the whole document: YAML aliases cannot blow a small body up
MAX_INT = 2**63 - 1
KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PATH_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")

Sampler = Literal["tpe", "random", "cmaes", "gp", "nsga2", "grid"]
Pruner = Literal["none", "median", "percentile", "successive_halving", "hyperband"]
Direction = Literal["maximize", "minimize"]
# The metrics a trial reports each epoch; the objective must be one of them.
Metric = Literal["val_acc", "val_loss", "train_acc", "train_loss"]
# Figures known only once a trial has ended: further objectives of a multi-objective search.
TrialFigure = Literal["params", "flops_per_image", "peak_memory_bytes", "seconds_per_epoch", "images_per_second", "svc_acc"]
Objective = Literal[Metric, TrialFigure]
EPOCH_METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]


def check_document(data: Any) -> None:
    """Refuse what no spec needs before validating it: more than ``MAX_NODES`` values (counting every use of a
    YAML alias), deep nesting, non-finite numbers, integers beyond 64 bits, NUL characters, long strings, and
    any type JSON does not have (YAML dates, binary, sets).

    Raises:
        SpecError: with the path of the first offending value.
    """
    budget = [MAX_NODES]

    def walk(value: Any, loc: tuple[str | int, ...]) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise SpecError((), f"the spec holds more than {MAX_NODES} values; no spec needs that many")
        if len(loc) > 16:
            raise SpecError(loc[:16], "the spec is nested more than 16 levels deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SpecError(loc, f"mapping keys must be strings, got {type(key).__name__} {_short(key)}")
                walk(key, loc)
                walk(item, (*loc, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*loc, i))
        else:
            try:
                check_scalar(value, MAX_TEXT)
            except ValueError as exc:
                raise SpecError(loc, str(exc)) from None

    walk(data, ())


def check_scalar(value: Any, max_len: int = MAX_STR) -> None:
    """A JSON scalar of sane size: null, bool, 64-bit int, finite float, or a short string without NUL."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError(f"integers must fit in 64 bits, got {_short(value)}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"numbers must be finite, got {value}")
    elif isinstance(value, str):
        if len(value) > max_len:
            raise ValueError(f"strings here are at most {max_len} characters, got {len(value)}")
        if "\x00" in value:
            raise ValueError("strings must not contain NUL characters")
    else:
        raise ValueError(
            f"values must be strings, numbers, booleans, null, lists or mappings, got {type(value).__name__}"
        )


def check_value(value: Any, where: str, depth: int = 0) -> Any:
    """A value of a free-form mapping or list: JSON types only, at most ``MAX_DEPTH`` levels, ``MAX_LIST``
    items per list, ``MAX_KEYS`` identifier keys per mapping, strings of at most ``MAX_STR`` characters."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        check_mapping(value, where, depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ValueError(f"{where} has {len(value)} items, at most {MAX_LIST}")
        for i, item in enumerate(value):
            check_value(item, f"{where}[{i}]", depth + 1)
    else:
        try:
            check_scalar(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return value


def check_mapping(value: dict[str, Any], where: str, depth: int = 0) -> dict[str, Any]:
    """A free-form mapping (``arch``, ``options``, ``sampler_options``, ...): its keys name keyword arguments."""
    if len(value) > MAX_KEYS:
        raise ValueError(f"{where} has {len(value)} entries, at most {MAX_KEYS}")
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > 64 or not KEY_PATTERN.match(key):
            raise ValueError(f"{where} keys must be identifiers of at most 64 characters, got {_short(key)}")
        check_value(item, f"{where}.{key}", depth)
    return value


def check_path_syntax(path: str) -> None:
    """A searched path is dotted identifiers (``model.arch.num_layers``), at most 200 characters."""
    if len(path) > 200 or not PATH_PATTERN.match(path):
        raise ValueError(f"path {_short(path)} must be dotted identifiers of at most 200 characters, e.g. train.lr")


def check_relative_path(value: Any, what: str) -> str:
    """A path from a spec must stay inside the directory it is resolved against (the data directory): relative,
    no ``~``, no ``..`` component, no NUL. The worker checks again when it resolves the path."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty path relative to the data directory, got {_short(value)}")
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    windows = PureWindowsPath(value)  # sees both separators: catches /x, \\x, C:x and //host/share
    if windows.drive or windows.root:
        raise ValueError(f"{what} must be relative to the data directory, got absolute path {value!r}")
    if value.startswith("~"):
        raise ValueError(f"{what} must be relative to the data directory, got {value!r}")
    if ".." in re.split(r"[/\\]", value):
        raise ValueError(f"{what} must stay inside the data directory; '..' is not allowed, got {value!r}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DatasetSpec(_Strict):
    name: str = Field(max_length=MAX_STR, description="Registered dataset name; see `vitsweep datasets`.")
    img_size: int = Field(32, ge=4, le=1024, description="Images are resized to img_size x img_size.")
    in_chans: int = Field(3, ge=1, le=4, description="Grayscale data is expanded to this many channels.")
    augment: str = Field("none", max_length=MAX_STR, description="Augmentation preset applied to training batches.")
    val_fraction: float | None = Field(
        None, gt=0, lt=1, description="Hold out this fraction of the training split; the official test split if unset."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Dataset-specific options, e.g. synthetic size.")

    @field_validator("options")
    @classmethod
    def _bounded_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_mapping(value, "options")

    @model_validator(mode="after")
    def _known_options(self) -> DatasetSpec:
        from worker.data import get_loader
        from worker.data.base import COMMON_OPTIONS

        allowed = {**COMMON_OPTIONS, **get_loader(self.name).options}
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for dataset {self.name!r}; valid: {', '.join(sorted(allowed))}"
            )
        if "path" in self.options:
            check_relative_path(self.options["path"], "dataset.options.path")
        return self

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from worker.data import list_datasets

        valid = list_datasets()
        if value not in valid:
            raise ValueError(f"unknown dataset {value!r}; valid: {', '.join(valid)}")
        return value

    @field_validator("augment")
    @classmethod
    def _known_augment(cls, value: str) -> str:
        from worker.augment import list_augments

        valid = list_augments()
        if value not in valid:
            raise ValueError(f"unknown augment preset {value!r}; valid: {', '.join(valid)}")
        return value


class ModelSpec(_Strict):
    name: str = Field(max_length=MAX_STR, description="Registered model name, or timm:<name>; see `vitsweep models`.")
    arch: dict[str, Any] = Field(default_factory=dict, description="Keywords of the upstream constructor.")
    arch_by_model: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        max_length=MAX_KEYS,
        description="Per-model arch blocks, for a search over model.name: the chosen model's block is merged over "
        "`arch` (its keys win), the others are ignored.",
    )
    code_size: int | None = Field(None, ge=1, le=65536, description="Width of an embedding layer before the head.")
    pretrained: str | None = Field(None, max_length=1024, description="Local weights file, relative to the data dir.")

    @field_validator("arch")
    @classmethod
    def _bounded_arch(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_mapping(value, "arch")

    @field_validator("arch_by_model")
    @classmethod
    def _known_models_with_arch(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from vitmodels import is_model

        for name, block in value.items():
            if not isinstance(name, str) or not is_model(name):
                raise ValueError(f"arch_by_model has a block for {_short(name)}, which is not a registered model")
            check_mapping(block, f"arch_by_model.{name}")
        return value

    def arch_for(self, name: str) -> dict[str, Any]:
        """The arch keywords ``name`` is built with: ``arch``, then its own block over it."""
        return {**self.arch, **self.arch_by_model.get(name, {})}

    @field_validator("pretrained")
    @classmethod
    def _confined_pretrained(cls, value: str | None) -> str | None:
        return None if value is None else check_relative_path(value, "model.pretrained")

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from vitmodels import is_model

        if not is_model(value):
            from vitmodels import list_models

            raise ValueError(f"unknown model {value!r}; valid: {', '.join(list_models())}, or timm:<name>")
        return value


class TrainSpec(_Strict):
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    max_inputs: int | None = Field(None, ge=1, le=10**12, description="Stop after exactly this many training inputs.")
    batch_size: int = Field(64, ge=1, le=65536)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=100)
    weight_decay: float = Field(0.05, ge=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    scheduler: Literal["constant", "cosine", "onecycle", "step"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS)
    step_size: int = Field(30, ge=1, le=MAX_EPOCHS, description="Epochs between decays of the step scheduler.")
    gamma: float = Field(0.1, gt=0, le=1)
    loss: Literal["cross_entropy", "l2"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    precision: Literal["fp32", "fp16", "bf16", "auto"] = "auto"
    grad_clip: float | None = Field(None, gt=0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile's mode when compile is on; reduce-overhead and max-autotune also "
        "capture CUDA graphs on a GPU.")
    fused_optimizer: bool | Literal["auto"] = Field(
        "auto", description="Fused Adam/AdamW/SGD kernels (one launch per step); auto: on a GPU.")
    fused_attention: bool = Field(
        True, description="scaled_dot_product_attention picks its fused kernels (flash, memory-efficient); "
        "false forces the plain math kernel, for comparison.")
    data_on_device: bool | Literal["auto"] = Field(
        "auto", description="In-memory datasets live on the training device and are augmented there; false "
        "feeds them through a DataLoader with num_workers processes instead. auto: on the device.")
    num_workers: int = Field(2, ge=0, le=64, description="DataLoader workers when data is not device-resident.")
    svc_probe: bool = Field(True, description="Fit an SVC on embeddings at the end of the trial.")
    plots: bool = Field(True, description="Draw curves, confusion matrix and misclassified images at the end.")
    checkpoint_every: int = Field(1, ge=1, le=MAX_EPOCHS, description="Save a resumable checkpoint every N epochs.")


class FloatParam(_Strict):
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


class IntParam(_Strict):
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


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1, max_length=MAX_LIST)

    @field_validator("choices")
    @classmethod
    def _bounded_choices(cls, value: list[Any]) -> list[Any]:
        for i, choice in enumerate(value):
            check_value(choice, f"choices[{i}]")
        return value


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


class SearchSpec(_Strict):
    sampler: Sampler = "tpe"
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    n_trials: int = Field(ge=1, le=MAX_TRIALS)
    metric: Metric = "val_acc"
    direction: Direction = "maximize"
    metrics: list[Objective] | None = Field(
        None, min_length=2, max_length=4,
        description="Several objectives (a multi-objective search, e.g. [val_acc, params]); the first is a per-epoch "
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


class ExperimentSpec(_Strict):
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
        if self.matrix is not None and math.prod(len(v) for v in self.matrix.values()) > MAX_TRIALS:
            raise ValueError(f"the matrix has more than {MAX_TRIALS} combinations")
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


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``path == "a.b.c"``, creating dicts below ``model.arch`` etc."""
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ValueError(f"path {path!r} goes through {key!r}, which is not a section")
        node = child
    node[keys[-1]] = copy.deepcopy(value)


def check_path(path: str) -> None:
    """A searchable path names a field of dataset, model or train (arch and options keys are free)."""
    check_path_syntax(path)
    keys = path.split(".")
    if len(keys) < 2 or keys[0] not in SECTIONS or not all(keys):
        raise ValueError(f"path {path!r} must start with one of {', '.join(SECTIONS)} and name a field, e.g. train.lr")
    sections: dict[str, type[BaseModel]] = {"dataset": DatasetSpec, "model": ModelSpec, "train": TrainSpec}
    section = sections[keys[0]]
    field = keys[1]
    if field not in section.model_fields:
        raise ValueError(f"path {path!r}: {keys[0]} has no field {field!r}; fields: {', '.join(section.model_fields)}")
    free = {"arch", "options", "arch_by_model"}
    if len(keys) > 2 and field not in free:
        raise ValueError(f"path {path!r}: {keys[0]}.{field} has no sub-fields")
    if len(keys) == 2 and field in free:
        raise ValueError(f"path {path!r}: name a key inside {keys[0]}.{field}, e.g. {keys[0]}.{field}.depth")
    if field == "arch_by_model":
        from vitmodels import is_model

        if len(keys) != 4:
            raise ValueError(f"path {path!r}: name a model and one of its keywords, e.g. model.arch_by_model.vit.num_layers")
        if not is_model(keys[2]):
            raise ValueError(f"path {path!r}: {keys[2]!r} is not a registered model")


def slug(params: dict[str, Any]) -> str:
    """A short readable name for a grid point: ``num_layers-4_lr-0.001``."""
    leaves = [p.rsplit(".", 1)[-1] for p in params]
    keys = leaves if len(set(leaves)) == len(leaves) else [p.replace(".", "-") for p in params]
    parts = []
    for key, value in zip(keys, params.values(), strict=True):
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}-{text}")
    return re.sub(r"[^A-Za-z0-9._=-]+", "", "_".join(parts))[:200]


def search_corners(spec: ExperimentSpec) -> list[tuple[dict[str, Any], str | None]]:
    """Points that together touch every bound and choice of the space, each with the path it varies
    (None for the base point): enough to check that the whole space is valid."""
    if spec.is_grid:
        return [(p, None) for p in spec.grid_points()]
    assert spec.search is not None
    base = {p: _first(d) for p, d in spec.search.space.items()}
    points: list[tuple[dict[str, Any], str | None]] = [(base, None)]
    for path, dist in spec.search.space.items():
        values = dist.choices[1:] if isinstance(dist, CategoricalParam) else [dist.high]
        # A model's own keyword only matters when that model is chosen: check it with that model.
        keys = path.split(".")
        pinned = {"model.name": keys[2]} if keys[:2] == ["model", "arch_by_model"] and "model.name" in base else {}
        if pinned:
            points.append(({**base, **pinned}, path))
        points.extend(({**base, **pinned, path: v}, path) for v in values)
    return points


def model_choices(spec: ExperimentSpec) -> list[Any]:
    """Every value ``model.name`` can take in this sweep."""
    if spec.matrix is not None and "model.name" in spec.matrix:
        return list(spec.matrix["model.name"])
    if spec.search is not None:
        dist = spec.search.space.get("model.name")
        if isinstance(dist, CategoricalParam):
            return list(dist.choices)
        if dist is not None:
            raise SpecError(("search", "space", "model.name"), "model.name can only be searched as a categorical")
    return [spec.model.name]


def _first(dist: FloatParam | IntParam | CategoricalParam) -> Any:
    return dist.choices[0] if isinstance(dist, CategoricalParam) else dist.low


class SpecError(ValueError):
    """A spec that parsed but cannot run; ``loc`` is the path of the bad field."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def validate_plan(spec: ExperimentSpec, *, build_model: bool = True) -> None:
    """Check every path, every grid point and every bound of the space resolves to a runnable spec.

    Raises:
        SpecError: naming the matrix or search entry at fault.
    """
    plan = "matrix" if spec.matrix is not None else "search"
    paths = list(spec.matrix) if spec.matrix is not None else list(spec.search.space)  # type: ignore[union-attr]
    if spec.search is not None:
        _check_search_options(spec.search)
    for path in paths:
        loc: tuple[str | int, ...] = (plan, path) if plan == "matrix" else ("search", "space", path)
        try:
            check_path(path)
        except ValueError as exc:
            raise SpecError(loc, str(exc)) from None
    _check_arch_blocks(spec, paths)
    seen: set[str] = set()
    for point, varied in search_corners(spec)[:256]:
        try:
            resolved = spec.resolve(point)
        except ValidationError as exc:
            err = exc.errors()[0]
            path = ".".join(str(p) for p in err["loc"])
            culprit = next((p for p in point if path.startswith(p) or p.startswith(path)), path)
            loc = (plan, culprit) if plan == "matrix" else ("search", "space", culprit)
            raise SpecError(loc, f"{path} = {point.get(culprit)!r}: {err['msg']}") from None
        if not build_model:
            continue
        key = json.dumps([resolved.model.model_dump(mode="json"), resolved.dataset.img_size, resolved.dataset.in_chans])
        if key in seen:
            continue
        seen.add(key)
        _check_model(resolved, point, plan, varied)


def _check_arch_blocks(spec: ExperimentSpec, paths: list[str]) -> None:
    """Every per-model arch block (given or searched) belongs to a model this sweep can choose: a block for any
    other model would be silently ignored, which is nearly always a typo."""
    choices = model_choices(spec)
    names = [n for n in choices if isinstance(n, str)]
    for name in spec.model.arch_by_model:
        if name not in names:
            raise SpecError(("model", "arch_by_model", name),
                            f"arch_by_model has a block for {name!r}, but model.name only takes {', '.join(names)}")
    plan: tuple[str, ...] = ("matrix",) if spec.matrix is not None else ("search", "space")
    for path in paths:
        keys = path.split(".")
        if keys[:2] == ["model", "arch_by_model"] and keys[2] not in names:
            raise SpecError((*plan, path), f"{path} is for model {keys[2]!r}, but model.name only takes {', '.join(names)}")


def _check_search_options(search: SearchSpec) -> None:
    """Build the sampler and pruner once, so options they do not take fail the submission, not every trial."""
    import warnings

    from server.studies import make_pruner, make_sampler

    checks: list[tuple[str, str, Callable[[], object]]] = [("pruner_options", search.pruner, lambda: make_pruner(search))]
    if search.sampler != "grid":  # grids pin every trial's values; the sampler's options are unused
        checks.insert(0, ("sampler_options", search.sampler, lambda: make_sampler(search, 0, None)))
    for field, kind, build in checks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-feature warnings of some samplers
                build()
        except (TypeError, ValueError, OverflowError) as exc:
            raise SpecError(("search", field), f"{field.split('_')[0]} {kind!r} refuses these options: {exc}") from None


def _check_model(resolved: ExperimentSpec, point: dict[str, Any], plan: str, varied: str | None) -> None:
    """Build the model on the meta device: catches bad architectures without allocating anything."""
    import torch

    from vitmodels import create_model

    try:
        with torch.device("meta"):
            create_model(
                resolved.model.name,
                num_classes=10,
                img_size=resolved.dataset.img_size,
                in_chans=resolved.dataset.in_chans,
                code_size=resolved.model.code_size,
                **resolved.model.arch,
            )
    except (ValueError, TypeError) as exc:
        # Blame the searched path that made this point differ from a buildable one; the base spec otherwise.
        culprit = varied or next((p for p in point if p.startswith("model.")), None) if plan == "matrix" else varied
        if culprit is None:
            loc: tuple[str | int, ...] = ("model", "arch")
        else:
            loc = (plan, culprit) if plan == "matrix" else ("search", "space", culprit)
        where = f" with {point}" if point else ""
        raise SpecError(loc, f"model {resolved.model.name!r} cannot be built{where}: {exc}") from None
