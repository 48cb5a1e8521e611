"""Swin Transformer from timm (``timm.models.swin_transformer.SwinTransformer``) with presets for small images.

Defaults follow the small-input presets (embed_dim 64, depths (2, 2, 8, 2), heads (2, 4, 8, 16), patch 4) with
the window chosen from ``img_size``: 8 at 32 and 64 pixels, 12 at 96. timm silently shrinks a window larger
than a stage's token grid and pads a grid the window does not divide; we accept the first (it is how the
presets work at late stages) and refuse the second, which would attend over padding.
"""

from __future__ import annotations

from typing import Any

from ._checks import check_divides, check_positive, check_probability, check_sequence
from ._registry import register_model
from ._timm import build_timm, wrap_timm
from ._wrap import Classifier
from .exceptions import InvalidArchError

__all__ = ["check_windows", "default_window_size"]

# img_size -> window_size for the small-input presets (patch 4).
WINDOW_PRESETS = {32: 8, 64: 8, 96: 12, 224: 7}


def default_window_size(img_size: int, patch_size: int) -> int:
    """The preset window for ``img_size``, else the largest divisor of the first token grid up to 8."""
    if patch_size == 4 and img_size in WINDOW_PRESETS:
        return WINDOW_PRESETS[img_size]
    grid = max(img_size // patch_size, 1)
    return max(w for w in range(1, min(grid, 8) + 1) if grid % w == 0)


def stage_grids(img_size: int, patch_size: int, num_stages: int) -> list[int]:
    """Token grid side per stage: the patch grid, halved (rounded up, timm pads) at each later stage."""
    grids = [img_size // patch_size]
    for _ in range(num_stages - 1):
        grids.append(-(-grids[-1] // 2))
    return grids


def check_windows(img_size: int, patch_size: int, window_size: int, num_stages: int) -> None:
    """At every stage the window divides the token grid, or covers all of it (timm then shrinks it)."""
    for stage, grid in enumerate(stage_grids(img_size, patch_size, num_stages)):
        if grid > window_size and grid % window_size:
            raise InvalidArchError(
                f"window_size must divide the token grid, got {window_size=} for {img_size=} "
                f"({patch_size=}: stage {stage} has a {grid}x{grid} grid)"
            )


@register_model
def swin(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    embed_dim: int = 64,
    depths: tuple[int, ...] = (2, 2, 8, 2),
    num_heads: tuple[int, ...] = (2, 4, 8, 16),
    window_size: int | None = None,
    patch_size: int = 4,
    mlp_ratio: float = 4.0,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.1,
    **arch: Any,
) -> Classifier:
    """timm SwinTransformer; ``window_size`` None picks the preset for ``img_size``; other keywords go to timm."""
    check_positive(embed_dim=embed_dim, patch_size=patch_size)
    check_probability(drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate)
    depths = check_sequence("depths", depths)
    num_heads = check_sequence("num_heads", num_heads, length=len(depths))
    check_divides("patch_size", patch_size, "img_size", img_size)
    if window_size is None:
        window_size = default_window_size(img_size, patch_size)
    check_positive(window_size=window_size)
    check_windows(img_size, patch_size, window_size, len(depths))
    if "head_dim" not in arch:
        for stage, heads in enumerate(num_heads):
            check_divides(
                f"num_heads[{stage}]", heads, "stage width", embed_dim * 2**stage, what="the stage width"
            )
    if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise InvalidArchError(f"mlp_ratio must be positive, got {mlp_ratio=}")
    named = dict(
        img_size=img_size,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=num_heads,
        window_size=window_size,
        patch_size=patch_size,
        mlp_ratio=mlp_ratio,
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
        drop_path_rate=drop_path_rate,
    )
    from timm.models.swin_transformer import SwinTransformer

    backbone = build_timm(SwinTransformer, "swin", named, arch)
    resolved = {k: v for k, v in named.items() if k not in ("img_size", "in_chans")}
    return wrap_timm(backbone, num_classes=num_classes, code_size=code_size, arch={**resolved, **arch})
