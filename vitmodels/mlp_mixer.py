"""MLP-Mixer (Tolstikhin et al. 2021) from timm (``timm.models.mlp_mixer.MlpMixer``).

``mlp_mixer`` has small defaults for 32px; ``mlp_mixer_s16`` and ``mlp_mixer_b16`` are the paper's S/16 and
B/16 shapes (as timm's ``mixer_s16_224`` and ``mixer_b16_224``). The token-mixing MLP is sized by the number
of patches, so weights transfer only between models with the same ``img_size // patch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._checks import check_divides, check_positive
from ._registry import register_model
from ._timm import build_timm, wrap_timm
from ._wrap import Classifier
from .exceptions import InvalidArchError

__all__ = ["build_mixer"]

MlpRatio = float | tuple[float, float]


def _check_mlp_ratio(mlp_ratio: Any) -> MlpRatio:
    """A positive number, or a (token, channel) pair of positive numbers, as timm takes."""
    values = (
        list(mlp_ratio) if isinstance(mlp_ratio, Sequence) and not isinstance(mlp_ratio, str) else [mlp_ratio]
    )
    ok = len(values) in (1, 2) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values
    )
    if not ok:
        raise InvalidArchError(f"mlp_ratio must be a positive number or a pair of them, got {mlp_ratio=}")
    return (float(values[0]), float(values[1])) if len(values) == 2 else float(values[0])


def build_mixer(
    model: str,
    *,
    num_classes: int,
    img_size: int,
    in_chans: int,
    code_size: int | None,
    patch_size: int,
    num_blocks: int,
    embed_dim: int,
    mlp_ratio: Any,
    arch: dict[str, Any],
) -> Classifier:
    """Validate and build a headless MlpMixer in a Classifier; shared by the registered shapes."""
    check_positive(patch_size=patch_size, num_blocks=num_blocks, embed_dim=embed_dim)
    check_divides("patch_size", patch_size, "img_size", img_size)
    named = dict(
        img_size=img_size,
        in_chans=in_chans,
        patch_size=patch_size,
        num_blocks=num_blocks,
        embed_dim=embed_dim,
        mlp_ratio=_check_mlp_ratio(mlp_ratio),
    )
    from timm.models.mlp_mixer import MlpMixer

    backbone = build_timm(MlpMixer, model, named, arch)
    resolved = {k: v for k, v in named.items() if k not in ("img_size", "in_chans")}
    return wrap_timm(backbone, num_classes=num_classes, code_size=code_size, arch={**resolved, **arch})


@register_model
def mlp_mixer(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    patch_size: int = 4,
    num_blocks: int = 8,
    embed_dim: int = 128,
    mlp_ratio: MlpRatio = (0.5, 4.0),
    **arch: Any,
) -> Classifier:
    """A small Mixer for 32px inputs: 64 tokens of 4x4 pixels, width 128."""
    return build_mixer(
        "mlp_mixer",
        num_classes=num_classes,
        img_size=img_size,
        in_chans=in_chans,
        code_size=code_size,
        patch_size=patch_size,
        num_blocks=num_blocks,
        embed_dim=embed_dim,
        mlp_ratio=mlp_ratio,
        arch=arch,
    )


@register_model
def mlp_mixer_s16(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    patch_size: int = 16,
    num_blocks: int = 8,
    embed_dim: int = 512,
    mlp_ratio: MlpRatio = (0.5, 4.0),
    **arch: Any,
) -> Classifier:
    """Mixer-S/16 (timm ``mixer_s16_224``)."""
    return build_mixer(
        "mlp_mixer_s16",
        num_classes=num_classes,
        img_size=img_size,
        in_chans=in_chans,
        code_size=code_size,
        patch_size=patch_size,
        num_blocks=num_blocks,
        embed_dim=embed_dim,
        mlp_ratio=mlp_ratio,
        arch=arch,
    )


@register_model
def mlp_mixer_b16(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    patch_size: int = 16,
    num_blocks: int = 12,
    embed_dim: int = 768,
    mlp_ratio: MlpRatio = (0.5, 4.0),
    **arch: Any,
) -> Classifier:
    """Mixer-B/16 (timm ``mixer_b16_224``)."""
    return build_mixer(
        "mlp_mixer_b16",
        num_classes=num_classes,
        img_size=img_size,
        in_chans=in_chans,
        code_size=code_size,
        patch_size=patch_size,
        num_blocks=num_blocks,
        embed_dim=embed_dim,
        mlp_ratio=mlp_ratio,
        arch=arch,
    )
