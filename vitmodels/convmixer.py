"""ConvMixer (Trockman & Kolter 2022, "Patches Are All You Need?") from timm (``timm.models.convmixer``).

Defaults are the paper's CIFAR-10 shape: width 256, depth 8, depthwise kernel 5, patch 2.
"""

from __future__ import annotations

from typing import Any

from ._checks import check_divides, check_positive
from ._registry import register_model
from ._timm import build_timm, wrap_timm
from ._wrap import Classifier

__all__: list[str] = []


@register_model
def convmixer(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    dim: int = 256,
    depth: int = 8,
    kernel_size: int = 5,
    patch_size: int = 2,
    **arch: Any,
) -> Classifier:
    """timm ConvMixer; further keywords (``drop_rate``, ``global_pool``) go to timm."""
    check_positive(dim=dim, depth=depth, kernel_size=kernel_size, patch_size=patch_size)
    check_divides("patch_size", patch_size, "img_size", img_size)
    named = dict(in_chans=in_chans, dim=dim, depth=depth, kernel_size=kernel_size, patch_size=patch_size)
    from timm.models.convmixer import ConvMixer

    backbone = build_timm(ConvMixer, "convmixer", named, arch)
    resolved = dict(dim=dim, depth=depth, kernel_size=kernel_size, patch_size=patch_size)
    return wrap_timm(backbone, num_classes=num_classes, code_size=code_size, arch={**resolved, **arch})
