"""``create_model`` and ``describe_models``: the package's front door, after ``timm/models/_factory.py``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._checks import check_positive
from ._registry import (
    TIMM_PREFIX,
    accepts_extra_arch,
    arch_defaults,
    list_models,
    model_entrypoint,
    model_family,
)
from .exceptions import InvalidArchError

__all__ = ["create_model", "describe_models"]


def create_model(
    name: str,
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    pretrained: str | os.PathLike[str] | None = None,
    stn: bool | Mapping[str, int] | None = None,
    **arch: Any,
) -> nn.Module:
    """Build model ``name`` for ``img_size`` square inputs with ``in_chans`` channels.

    Works under ``with torch.device("meta"):`` so a spec can be checked without allocating weights.

    Args:
        name: a registered name (see :func:`list_models`) or ``timm:<name>`` for any timm model.
        num_classes: width of the logits.
        img_size: input height and width.
        in_chans: input channels.
        code_size: width of an extra Linear before the head; its output becomes the embedding.
        pretrained: a local weights file to start from (the head is replaced, position embeddings resized).
        stn: put a spatial transformer in front of the model (true, or ``{channels, hidden}`` of its
            localisation net); its warp starts at the identity. Pretrained weights load into the model behind it.
        **arch: keywords of the upstream constructor, e.g. ``patch_size`` or ``depths``.

    Raises:
        UnknownModelError: ``name`` is not a model.
        InvalidArchError: an unknown keyword, or a value that cannot build at this size.
        PretrainedWeightsError: ``pretrained`` is missing or does not fit.
    """
    check_positive(num_classes=num_classes, img_size=img_size, in_chans=in_chans)
    if code_size is not None:
        check_positive(code_size=code_size)
    common: dict[str, Any] = dict(
        num_classes=num_classes, img_size=img_size, in_chans=in_chans, code_size=code_size
    )
    if name.startswith(TIMM_PREFIX):
        from ._timm import create_timm_classifier

        model = create_timm_classifier(name[len(TIMM_PREFIX) :], **common, **arch)
    else:
        entrypoint = model_entrypoint(name)
        defaults = arch_defaults(name)
        unknown = sorted(set(arch) - set(defaults))
        if unknown and not accepts_extra_arch(name):
            raise InvalidArchError(
                f"unknown arch keyword{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for model {name!r}; "
                f"accepted: {', '.join(defaults) or 'none'}"
            )
        model = entrypoint(**common, **arch)
        # The entry point records values it resolved from the size (e.g. swin's window); they win.
        model.arch = {**defaults, **arch, **getattr(model, "arch", {})}
    if pretrained is not None:
        from ._pretrained import load_pretrained

        load_pretrained(model, pretrained)
    if stn:
        from .vit_stn import add_spatial_transformer

        options = dict(stn) if isinstance(stn, Mapping) else {}
        unknown = sorted(set(options) - {"channels", "hidden"})
        if unknown:
            raise InvalidArchError(f"unknown stn option(s) {', '.join(unknown)}; accepted: channels, hidden")
        model = add_spatial_transformer(model, img_size=img_size, in_chans=in_chans, **options)
    return model


def describe_models(img_size: int = 32, in_chans: int = 3, num_classes: int = 10) -> list[dict[str, Any]]:
    """One row per registered model: name, family, resolved arch defaults, and parameter count at this size.

    Models are built on the meta device, so this is quick and allocates nothing. A model that cannot be built
    at this size has ``param_count`` None and an ``error`` message.
    """
    rows: list[dict[str, Any]] = []
    for name in list_models():
        row: dict[str, Any] = {"name": name, "family": model_family(name), "defaults": arch_defaults(name)}
        try:
            with torch.device("meta"):
                model = create_model(name, num_classes=num_classes, img_size=img_size, in_chans=in_chans)
        except (ValueError, TypeError, RuntimeError) as exc:
            row["param_count"] = None
            row["error"] = str(exc)
        else:
            row["defaults"] = dict(getattr(model, "arch", row["defaults"]))
            row["param_count"] = sum(p.numel() for p in model.parameters())
        rows.append(row)
    return rows
