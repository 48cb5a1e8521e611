"""The three sections every trial is made of: ``dataset``, ``model`` and ``train``.

Their fields are what a dotted path may address (:func:`check_path`). Names that resolve through a registry the
worker owns (datasets, augmentation presets) are checked against a catalog at submission (``plan``); model
names resolve through ``vitmodels`` here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.core.datapaths import check_relative
from server.core.spec.limits import MAX_EPOCHS, MAX_KEYS, MAX_STR, check_arch_ints, check_mapping, short_repr
from server.core.spec.paths import check_path_syntax

SECTIONS = ("dataset", "model", "train")
# Fields holding free-form mappings whose keys a path may name (model.arch.depth, dataset.options.path).
FREE_FIELDS = frozenset({"arch", "options", "arch_by_model"})


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class DatasetSpec(Strict):
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
        check_mapping(value, "options")
        if "path" in value:
            check_relative(value["path"], "dataset.options.path")
        return value


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


class TrainSpec(Strict):
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


SECTION_MODELS: dict[str, type[BaseModel]] = {"dataset": DatasetSpec, "model": ModelSpec, "train": TrainSpec}


def check_path(path: str) -> None:
    """A searchable path names a field of dataset, model or train (arch and options keys are free)."""
    check_path_syntax(path)
    keys = path.split(".")
    if len(keys) < 2 or keys[0] not in SECTIONS or not all(keys):
        raise ValueError(f"path {path!r} must start with one of {', '.join(SECTIONS)} and name a field, e.g. train.lr")
    section = SECTION_MODELS[keys[0]]
    field = keys[1]
    if field not in section.model_fields:
        raise ValueError(f"path {path!r}: {keys[0]} has no field {field!r}; fields: {', '.join(section.model_fields)}")
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
