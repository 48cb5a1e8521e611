"""The three sections every trial is made of: ``dataset``, ``model`` and ``train``.

Their fields are what a dotted path may address (:func:`check_path`). Names that resolve through a registry the
worker owns (datasets, augmentation presets) are checked against a catalog at submission (``plan``); model
names resolve through ``vitmodels`` here.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from server.core.datapaths import check_relative
from server.core.objectives import EPOCH_METRICS
from server.core.spec import korniaops, torchnames
from server.core.spec.limits import MAX_EPOCHS, MAX_KEYS, MAX_STR, check_arch_ints, check_mapping, short_repr
from server.core.spec.paths import check_path_syntax

SECTIONS = ("dataset", "model", "train")
# Fields holding free-form mappings whose keys a path may name (model.arch.depth, dataset.options.path).
FREE_FIELDS = frozenset({"arch", "options", "arch_by_model"})
# Fields that are a short name or a block of torch keywords: the field itself and its keywords are paths
# (train.optimizer, train.optimizer.betas).
BLOCK_FIELDS = frozenset({"optimizer", "scheduler"})

NormalizeName = Literal["dataset", "none", "imagenet", "cifar10"]
# Named per-channel statistics (RGB, on the [0, 1] scale), as torchvision's and timm's recipes write them.
NORMALIZE_CONSTANTS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
OptimizerName = Literal["adam", "adamw", "sgd"]
SchedulerName = Literal["constant", "cosine", "onecycle", "step"]


def revalidate(model: type[BaseModel], value: Any) -> Any:
    """``model.model_validate(value)`` with its errors located below the field being validated (no union tags)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        details = [
            InitErrorDetails(type=PydanticCustomError("value_error", "{msg}", {"msg": e["msg"]}), loc=tuple(e["loc"]),
                             input=e.get("input"))
            for e in exc.errors(include_url=False)
        ]
        raise ValidationError.from_exception_data("spec", details) from None


def error_at(loc: tuple[str | int, ...], msg: str, value: Any = None) -> ValidationError:
    """A validation error located below the field being validated (pydantic prefixes the field's own path), so
    a 422 names ``train.optimizer.betas`` rather than ``train.optimizer``."""
    error = PydanticCustomError("value_error", "{msg}", {"msg": msg})
    return ValidationError.from_exception_data("spec", [InitErrorDetails(type=error, loc=loc, input=value)])


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class NormalizeStats(Strict):
    """Explicit per-channel statistics on the [0, 1] scale: inputs are ``(x / 255 - mean) / std``."""

    mean: list[float] = Field(min_length=1, max_length=4)
    std: list[float] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _check(self) -> NormalizeStats:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std need one value per channel each, got {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(v) for v in self.mean):
            raise ValueError(f"mean must be finite, got {self.mean}")
        if not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        return self


class AugmentPipeline(Strict):
    """A pipeline of kornia ops: ``{ops: [{RandomCrop: {size: [32, 32], padding: 4}}, ...], random_apply: [1, 4]}``.

    ``random_apply`` is kornia's own (``ImageSequential``): how many of the image ops to apply, chosen once per
    batch and run in a random order; unset, every op runs in order.
    """

    ops: list[dict[str, Any]] = Field(min_length=1, max_length=korniaops.MAX_OPS,
                                      description="kornia.augmentation ops, each {ClassName: {keywords}}.")
    random_apply: int | list[int] | bool | None = Field(
        None, description="kornia's random_apply: n, [lo, hi] or true; chosen per batch.")

    @field_validator("ops")
    @classmethod
    def _ops_bounded(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, op in enumerate(value):
            check_mapping(op, f"ops[{i}]")
        return value


class DatasetSpec(Strict):
    name: str = Field(max_length=MAX_STR, description="Registered dataset name; see `vitsweep datasets`.")
    img_size: int = Field(32, ge=4, le=1024, description="Images are resized to img_size x img_size.")
    in_chans: int = Field(3, ge=1, le=4, description="Grayscale data is expanded to this many channels.")
    augment: str | list[dict[str, Any]] | AugmentPipeline = Field(
        "none",
        description="A preset name (see `vitsweep datasets`), a list of kornia.augmentation ops "
        "[{RandomCrop: {size: [32, 32], padding: 4}}, ...], or {ops: [...], random_apply: [lo, hi]}.",
    )
    normalize: NormalizeName | NormalizeStats = Field(
        "dataset",
        description="dataset: its own statistics; none: x/255; imagenet or cifar10: their constants; or "
        "{mean: [...], std: [...]} (one value, or one per channel; mean 0.5, std 0.5 is x*2-1).",
    )
    val_fraction: float | None = Field(
        None, ge=0, lt=1,
        description="Hold out this fraction of the training split (0: train on all of it, no validation); unset: "
        "the official test split, or 20% where there is none.",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Dataset-specific options, e.g. synthetic size.")

    @field_validator("options")
    @classmethod
    def _bounded_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_mapping(value, "options")
        if "path" in value:
            check_relative(value["path"], "dataset.options.path")
        return value

    @field_validator("normalize", mode="wrap")
    @classmethod
    def _normalize(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, dict):
            return revalidate(NormalizeStats, value)
        if isinstance(value, str) and value in get_args(NormalizeName):
            return handler(value)
        if isinstance(value, NormalizeStats):
            return value
        raise error_at((), f"normalize must be one of {', '.join(get_args(NormalizeName))} or {{mean: [...], std: "
                       f"[...]}}; got {short_repr(value)}", value)

    @field_validator("augment", mode="wrap")
    @classmethod
    def _augment(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, str):
            if len(value) > MAX_STR:
                raise error_at((), f"an augment preset name has at most {MAX_STR} characters", None)
            return value
        if isinstance(value, list):
            check_value_list = revalidate(AugmentPipeline, {"ops": value})  # bounded like any pipeline
            return check_value_list.ops
        if isinstance(value, dict):
            return revalidate(AugmentPipeline, value)
        if isinstance(value, AugmentPipeline):
            return value
        raise error_at((), "augment is a preset name, a list of kornia ops [{ClassName: {keywords}}, ...] or "
                       f"{{ops: [...], random_apply: [lo, hi]}}; got {short_repr(value)}", value)

    @model_validator(mode="after")
    def _augment_builds(self) -> DatasetSpec:
        if isinstance(self.augment, str):
            return self  # a preset: its name is checked against the worker's catalog (plan)
        ops, random_apply, where = self.augment_ops()
        try:
            korniaops.check_pipeline(ops, random_apply, where=where, img_size=self.img_size, in_chans=self.in_chans)
        except korniaops.OpError as exc:
            raise error_at(("augment", *exc.loc), str(exc), None) from None
        return self

    def augment_ops(self) -> tuple[list[dict[str, Any]], Any, tuple[str, ...]]:
        """A pipeline's ops, its ``random_apply`` and where its ops sit below ``augment`` (as the user wrote it)."""
        if isinstance(self.augment, AugmentPipeline):
            return self.augment.ops, self.augment.random_apply, ("ops",)
        assert isinstance(self.augment, list), "a preset name has no ops here"
        return self.augment, None, ()

    @model_validator(mode="after")
    def _normalize_channels(self) -> DatasetSpec:
        stats = self.normalization()
        if stats is not None and len(stats[0]) != self.in_chans:
            where = self.normalize if isinstance(self.normalize, str) else "normalize"
            raise error_at(("normalize",), f"{where} has {len(stats[0])} channel(s), the images {self.in_chans} "
                           "(in_chans); give one value or one per channel", None)
        return self

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Per-channel ``(mean, std)`` to normalise with, or None for the dataset's own statistics."""
        if isinstance(self.normalize, NormalizeStats):
            mean, std = tuple(self.normalize.mean), tuple(self.normalize.std)
            if len(mean) == 1:
                return mean * self.in_chans, std * self.in_chans
            return mean, std
        if self.normalize == "dataset":
            return None
        if self.normalize == "none":
            return (0.0,) * self.in_chans, (1.0,) * self.in_chans
        return NORMALIZE_CONSTANTS[self.normalize]


class ModelSpec(Strict):
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
    stn: bool | dict[str, int] = Field(
        False,
        description="A spatial transformer in front of the model: true, or {channels, hidden} of its localisation "
        "net (8 and 32 by default).",
    )

    @field_validator("stn")
    @classmethod
    def _stn_options(cls, value: bool | dict[str, int]) -> bool | dict[str, int]:
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"channels", "hidden"})
            if unknown:
                raise ValueError(f"unknown stn option(s) {', '.join(map(short_repr, unknown))}; valid: channels, hidden")
            bad = {k: v for k, v in value.items() if not 1 <= v <= 4096}
            if bad:
                raise ValueError(f"stn sizes must lie in [1, 4096], got {bad}")
        return value

    @field_validator("arch")
    @classmethod
    def _bounded_arch(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_mapping(value, "arch")
        check_arch_ints(value, "arch")
        return value

    @field_validator("arch_by_model")
    @classmethod
    def _known_models_with_arch(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from vitmodels import is_model

        for name, block in value.items():
            if not isinstance(name, str) or not is_model(name):
                raise ValueError(f"arch_by_model has a block for {short_repr(name)}, which is not a registered model")
            check_mapping(block, f"arch_by_model.{name}")
            check_arch_ints(block, f"arch_by_model.{name}")
        return value

    def arch_for(self, name: str) -> dict[str, Any]:
        """The arch keywords ``name`` is built with: ``arch``, then its own block over it."""
        return {**self.arch, **self.arch_by_model.get(name, {})}

    @field_validator("pretrained")
    @classmethod
    def _confined_pretrained(cls, value: str | None) -> str | None:
        return None if value is None else check_relative(value, "model.pretrained")

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from vitmodels import is_model, list_models

        if not is_model(value):
            raise ValueError(f"unknown model {value!r}; valid: {', '.join(list_models())}, or timm:<name>")
        return value


SVC_SAMPLES = 5000  # training images the probe's SVC is fit on unless the spec says otherwise


class SvcProbe(Strict):
    """``train.svc_probe`` as a block: how often the SVC probe runs and on how many training images it is fit."""

    every: int = Field(0, ge=0, le=MAX_EPOCHS, description="Also probe every N epochs (logged as svc_acc at that "
                       "step); 0: only at the end of the trial.")
    samples: int = Field(SVC_SAMPLES, ge=2, le=100_000, description="Training images the SVC is fit on (a seeded "
                         "sample; all of them where the split is smaller). It is scored on up to 10,000 validation "
                         "images either way.")


class TorchBlock(BaseModel):
    """``{name: <torch class>, <its keywords>}``: the class is whitelisted and every keyword checked against its
    real signature (keywords vitsweep fills are refused, naming where they come from)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(max_length=MAX_STR)

    @property
    def keywords(self) -> dict[str, Any]:
        """The block's keywords, its name left out."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_keywords(self) -> TorchBlock:
        kind = self.kind_name()
        try:
            check_mapping(self.keywords, kind)
            torchnames.check_keywords(kind, self.name, self.keywords)
        except torchnames.BlockError as exc:
            raise error_at((exc.key,), str(exc), self.keywords.get(exc.key, self.name)) from None
        return self

    @classmethod
    def kind_name(cls) -> torchnames.Kind:
        raise NotImplementedError


class OptimizerBlock(TorchBlock):
    """A class of ``torch.optim`` by name: ``{name: AdamW, betas: [0.9, 0.99], weight_decay: 0.05}``."""

    @classmethod
    def kind_name(cls) -> torchnames.Kind:
        return "optimizer"


class SchedulerBlock(TorchBlock):
    """A class of ``torch.optim.lr_scheduler`` by name: ``{name: OneCycleLR, pct_start: 0.25}``; ``interval``
    (step or epoch) says how often it steps, ``monitor`` the metric ReduceLROnPlateau watches."""

    @classmethod
    def kind_name(cls) -> torchnames.Kind:
        return "scheduler"

    @model_validator(mode="after")
    def _check_monitor(self) -> SchedulerBlock:
        monitor = self.keywords.get("monitor", torchnames.MONITOR_DEFAULT)
        if self.name == torchnames.PLATEAU and monitor not in EPOCH_METRICS:
            raise error_at(("monitor",), f"monitor must be an epoch metric, one of {', '.join(EPOCH_METRICS)}; got "
                           f"{short_repr(monitor)}", monitor)
        return self


def _name_or_block(
    value: Any, handler: ValidatorFunctionWrapHandler, block: type[TorchBlock], short: tuple[str, ...]
) -> Any:
    """A short name (today's) or a torch block; errors located inside the block, valid choices listed."""
    kind = block.kind_name()
    if isinstance(value, TorchBlock):
        value = {"name": value.name, **value.keywords}
    if isinstance(value, dict):
        if not isinstance(value.get("name"), str):
            raise error_at(("name",), f"a {kind} block needs name: a class of torch.optim"
                           f"{'' if kind == 'optimizer' else '.lr_scheduler'}", value.get("name"))
        try:
            (torchnames.optimizer_class if kind == "optimizer" else torchnames.scheduler_class)(value["name"])
        except torchnames.BlockError as exc:
            raise error_at(("name",), str(exc), value["name"]) from None
        return revalidate(block, value)
    if isinstance(value, str) and value in short:
        return handler(value)
    raise error_at((), f"{kind} must be one of {', '.join(short)} or a block {{name: <class>, ...}} naming a class "
                   f"of torch.optim{'' if kind == 'optimizer' else '.lr_scheduler'}; got {short_repr(value)}", value)


class TrainSpec(Strict):
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    max_inputs: int | None = Field(None, ge=1, le=10**12, description="Stop after exactly this many training inputs.")
    max_steps: int | None = Field(None, ge=1, le=10**9, description="Stop after exactly this many optimizer steps.")
    batch_size: int = Field(64, ge=1, le=65536)
    optimizer: OptimizerName | OptimizerBlock = Field(
        "adamw", description="adam, adamw, sgd, or {name: <a class of torch.optim>, <its keywords>}; vitsweep "
        "fills params, lr (train.lr) and fused (train.fused_optimizer).")
    lr: float = Field(1e-3, gt=0, le=100)
    weight_decay: float | None = Field(
        None, ge=0, le=10, description="Of matrices and kernels; unset: torch's default for the optimizer (Adam and "
        "SGD 0, AdamW 0.01). A block's own weight_decay wins.")
    decay_norm_and_bias: bool = Field(False, description="Decay 1-d parameters (norm scales, biases) as well.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Of optimizer: sgd (a block gives its own).")
    nesterov: bool = Field(False, description="Of optimizer: sgd (a block gives its own).")
    scheduler: SchedulerName | SchedulerBlock = Field(
        "cosine", description="constant, cosine, onecycle, step, or {name: <a class of torch.optim.lr_scheduler>, "
        "<its keywords>, interval: step|epoch}; vitsweep fills optimizer, OneCycleLR's max_lr (train.lr) and "
        "total_steps, CyclicLR's max_lr, and T_max/total_iters unless given, from the budget.")
    warmup_epochs: float = Field(0.0, ge=0, le=MAX_EPOCHS)
    step_size: int = Field(30, ge=1, le=MAX_EPOCHS, description="Epochs between decays of the step scheduler.")
    gamma: float = Field(0.1, gt=0, le=1)
    loss: Literal["cross_entropy", "l2", "mse"] = Field(
        "cross_entropy", description="l2: squared distance to the one-hot target, summed over classes, averaged "
        "over the batch; mse: torch's MSELoss against the one-hot target (a mean over every element).")
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
    svc_probe: bool | SvcProbe = Field(
        True, description="Fit an SVC on embeddings at the end of the trial: true, false, or {every: N, samples: M} "
        "(also every N epochs; fit on M training images, default 5000).")
    plots: bool = Field(True, description="Draw curves, confusion matrix and misclassified images at the end.")
    checkpoint_every: int = Field(1, ge=1, le=MAX_EPOCHS, description="Save a resumable checkpoint every N epochs.")

    @field_validator("svc_probe", mode="wrap")
    @classmethod
    def _svc_probe(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, dict):
            return revalidate(SvcProbe, value)
        if isinstance(value, (bool, SvcProbe)):
            return value
        raise error_at((), f"svc_probe must be true, false or {{every: N, samples: M}}; got {short_repr(value)}", value)

    def probe(self) -> SvcProbe | None:
        """The SVC probe's settings, or None when it is off (``svc_probe: false``)."""
        if isinstance(self.svc_probe, SvcProbe):
            return self.svc_probe
        return SvcProbe() if self.svc_probe else None

    @field_validator("optimizer", mode="wrap")
    @classmethod
    def _optimizer(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _name_or_block(value, handler, OptimizerBlock, get_args(OptimizerName))

    @field_validator("scheduler", mode="wrap")
    @classmethod
    def _scheduler(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return _name_or_block(value, handler, SchedulerBlock, get_args(SchedulerName))

    @model_validator(mode="after")
    def _budget_and_blocks(self) -> TrainSpec:
        if self.max_steps is not None and self.max_inputs is not None:
            raise error_at(("max_steps",), "give max_steps or max_inputs, not both", self.max_steps)
        block_opt, block_sched = not isinstance(self.optimizer, str), not isinstance(self.scheduler, str)
        if block_opt:
            for field, default in (("momentum", 0.9), ("nesterov", False)):
                if getattr(self, field) != default:
                    raise error_at((field,), f"train.{field} is for optimizer: sgd; with a block give {field} in it, "
                                   f"e.g. optimizer: {{name: SGD, {field}: ...}}", getattr(self, field))
            given = self.optimizer.keywords.get("weight_decay")  # type: ignore[union-attr]
            if given is not None and self.weight_decay is not None and given != self.weight_decay:
                raise error_at(("weight_decay",), f"weight_decay is given twice ({self.weight_decay} here, {given} in "
                               "the optimizer block); give it once", self.weight_decay)
        if block_sched:
            for field, default in (("warmup_epochs", 0.0), ("step_size", 30), ("gamma", 0.1)):
                if getattr(self, field) != default:
                    raise error_at((field,), f"train.{field} is for the short-name schedulers; with a block give the "
                                   "scheduler's own keywords in it", getattr(self, field))
        # Today's short names too: sgd's nesterov without momentum is refused here, not in the first trial.
        try:
            torchnames.check_train(self)
        except torchnames.BlockError as exc:
            raise error_at(tuple(exc.key.split(".")), str(exc)) from None
        return self


SECTION_MODELS: dict[str, type[BaseModel]] = {"dataset": DatasetSpec, "model": ModelSpec, "train": TrainSpec}


def check_path(path: str, *, block: bool = False) -> None:
    """A searchable path names a field of dataset, model or train (arch and options keys are free).

    With ``block`` (a matrix point), a path may also name a whole section (``model``) or free-form mapping
    (``model.arch``): the point's value replaces it.
    """
    head, _, rest = path.partition(".")
    if block and (path in SECTIONS or (head in SECTIONS and rest in FREE_FIELDS)):
        return
    check_path_syntax(path)
    keys = path.split(".")
    if len(keys) < 2 or keys[0] not in SECTIONS or not all(keys):
        raise ValueError(f"path {path!r} must start with one of {', '.join(SECTIONS)} and name a field, e.g. train.lr")
    section = SECTION_MODELS[keys[0]]
    field = keys[1]
    if field not in section.model_fields:
        raise ValueError(f"path {path!r}: {keys[0]} has no field {field!r}; fields: {', '.join(section.model_fields)}")
    if field in BLOCK_FIELDS:
        if len(keys) > 3:
            raise ValueError(f"path {path!r}: name one keyword of {keys[0]}.{field}, e.g. {keys[0]}.{field}.{keys[2]}")
        return
    if len(keys) > 2 and field not in FREE_FIELDS:
        raise ValueError(f"path {path!r}: {keys[0]}.{field} has no sub-fields")
    if len(keys) == 2 and field in FREE_FIELDS:
        raise ValueError(f"path {path!r}: name a key inside {keys[0]}.{field}, e.g. {keys[0]}.{field}.depth")
    if field == "arch_by_model":
        from vitmodels import is_model

        if len(keys) != 4:
            raise ValueError(f"path {path!r}: name a model and one of its keywords, e.g. model.arch_by_model.vit.num_layers")
        if not is_model(keys[2]):
            raise ValueError(f"path {path!r}: {keys[2]!r} is not a registered model")
