"""timm-backed backbones: any timm model by name (``timm:<name>``) or by class, headless, in a Classifier.

timm is imported where a model is built, not with the package: importing it pulls torchvision's feature
extraction and TorchDynamo (seconds per process), which the API, the CLI and the supervisor never need.

timm models are built with ``num_classes=0`` so their ``forward`` returns the pooled pre-logits vector; our
:class:`Classifier` adds the code layer and head, so every family shares one head layout.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ._wrap import Classifier
from .exceptions import InvalidArchError, UnknownModelError

__all__ = ["build_timm", "create_timm_classifier", "timm_features", "wrap_timm"]

# Set by the factory or the wrapper, never by a spec's arch.
_RESERVED = frozenset({"self", "num_classes", "in_chans", "img_size", "device", "dtype"})
# timm.create_model options that fetch weights, change the output type or the build: not architecture.
_FACTORY_OPTIONS = frozenset(
    {
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "pretrained_strict",
        "checkpoint_path",
        "cache_dir",
        "features_only",
        "out_indices",
        "feature_cfg",
        "scriptable",
        "exportable",
        "no_jit",
        "device",
        "dtype",
    }
)


def timm_features(model: nn.Module) -> int:
    """Width of a headless timm model's pooled output (``head_hidden_size`` where a pre-logits layer exists)."""
    width: Any = getattr(model, "head_hidden_size", None) or model.num_features
    return int(width)


def wrap_timm(
    backbone: nn.Module, *, num_classes: int, code_size: int | None, arch: dict[str, Any] | None = None
) -> Classifier:
    """A headless timm model (``num_classes=0``) in a Classifier."""
    return Classifier(backbone, timm_features(backbone), num_classes, code_size, arch=arch)


def build_timm(
    cls: type[nn.Module],
    model: str,
    named: dict[str, Any],
    extra: dict[str, Any],
    *,
    variant: str | None = None,
) -> nn.Module:
    """Headless ``cls(num_classes=0, **named, **extra)``; ``extra`` may hold only ``cls``'s own keywords.

    Args:
        cls: a timm model class, e.g. ``SwinTransformer``.
        model: the registered name, for messages.
        named: keywords the entry point resolved (sizes, widths), already validated.
        extra: further keywords from the spec, passed through to ``cls`` unchanged.
        variant: build timm's named variant (e.g. ``tnt_s_patch16_224``) of ``cls`` instead, with its own
            preset arguments and pretrained config.
    """
    params = inspect.signature(cls.__init__).parameters
    accepted = [
        p for p, v in params.items() if p not in _RESERVED and v.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    unknown = sorted(set(extra) - set(accepted))
    if unknown:
        raise InvalidArchError(
            f"unknown arch keyword{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for model {model!r}; "
            f"accepted: {', '.join(accepted)}"
        )
    try:
        if variant is not None:
            import timm

            return timm.create_model(variant, pretrained=False, num_classes=0, **named, **extra)
        return cls(num_classes=0, **named, **extra)
    except (AssertionError, TypeError, RuntimeError) as exc:
        # timm checks many shapes with bare asserts; give them the package's error type.
        raise InvalidArchError(f"{model} cannot be built with {extra or named}: {exc}") from None


def _accepted_keywords(name: str) -> list[str]:
    """Constructor keywords of timm model ``name``'s class, found by building its default on the meta device."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
    params = inspect.signature(type(model).__init__).parameters
    return [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]


def create_timm_classifier(
    name: str, *, num_classes: int, img_size: int, in_chans: int, code_size: int | None, **arch: Any
) -> Classifier:
    """Any timm model by name, randomly initialised; ``img_size`` is passed only to models that take it."""
    import timm

    if not timm.is_model(name):
        raise UnknownModelError(f"unknown timm model {name!r}; see timm.list_models() for valid names")
    options = sorted(set(arch) & _FACTORY_OPTIONS)
    if options:
        raise InvalidArchError(
            f"{', '.join(options)} for model 'timm:{name}': a timm.create_model option, not an arch keyword "
            "(weights come only from the pretrained argument, and the model is always a classifier)"
        )
    kwargs: dict[str, Any] = dict(pretrained=False, num_classes=0, in_chans=in_chans, **arch)
    try:
        try:
            backbone = timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            backbone = timm.create_model(name, **kwargs)
    except TypeError as exc:
        bad = [k for k in arch if repr(k) in str(exc) or k in str(exc)]
        if "unexpected keyword" not in str(exc) or not bad:
            raise
        raise InvalidArchError(
            f"unknown arch keyword {bad[0]} for model 'timm:{name}'; accepted: {', '.join(_accepted_keywords(name))}"
        ) from None
    except (AssertionError, RuntimeError) as exc:
        # timm validates many shapes with bare asserts; give them the package's error type.
        raise InvalidArchError(f"timm:{name} cannot be built with {arch} at {img_size=}: {exc}") from None
    return wrap_timm(backbone, num_classes=num_classes, code_size=code_size, arch=arch)
