"""Transformer in Transformer (Han et al. 2021): an inner transformer over pixels inside each patch.

``tnt`` is lucidrains' ``transformer-in-transformer`` (randomly initialised, small defaults for 32px);
``tnt_s`` is timm's ``tnt_s_patch16_224``, whose keywords are timm's ``TNT`` ones, for fine-tuning from weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformer_in_transformer import TNT

from ._checks import check_divides, check_positive, check_probability
from ._registry import register_model
from ._timm import build_timm, wrap_timm
from ._wrap import Classifier

__all__ = ["TNTBackbone"]


class TNTBackbone(nn.Module):
    """lucidrains' TNT with its classifier Linear removed: returns the normed class token ``[B, patch_dim]``.

    The forward pass is upstream's, rewritten without its in-place additions to expanded views of the token
    parameters, which current torch rejects in training ("a view of a leaf Variable ... in-place").
    """

    def __init__(self, tnt: TNT) -> None:
        super().__init__()
        tnt.mlp_head[1] = nn.Identity()
        self.tnt = tnt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tnt
        b, h, w = x.shape[0], x.shape[2] // t.patch_size, x.shape[3] // t.patch_size
        n = h * w
        pixels = t.to_pixel_tokens(x) + t.pixel_pos_emb
        patches = (t.patch_tokens[: n + 1] + t.patch_pos_emb[: n + 1]).expand(b, -1, -1)
        for pixel_attn, pixel_ff, pixel_to_patch, patch_attn, patch_ff in t.layers:
            pixels = pixel_attn(pixels) + pixels
            pixels = pixel_ff(pixels) + pixels
            residual = rearrange(pixel_to_patch(pixels), "(b h w) d -> b (h w) d", h=h, w=w)
            patches = patches + F.pad(residual, (0, 0, 1, 0), value=0.0)  # the class token gets no residual
            patches = patch_attn(patches) + patches
            patches = patch_ff(patches) + patches
        return t.mlp_head(patches[:, 0])


@register_model
def tnt(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    patch_dim: int = 128,
    pixel_dim: int = 16,
    patch_size: int = 4,
    pixel_size: int = 2,
    depth: int = 6,
    heads: int = 4,
    dim_head: int = 32,
    ff_dropout: float = 0.0,
    attn_dropout: float = 0.0,
) -> Classifier:
    """lucidrains TNT: 4x4-pixel patches whose 2x2-pixel sub-patches form the inner sequence."""
    check_positive(
        patch_dim=patch_dim,
        pixel_dim=pixel_dim,
        patch_size=patch_size,
        pixel_size=pixel_size,
        depth=depth,
        heads=heads,
        dim_head=dim_head,
    )
    check_probability(ff_dropout=ff_dropout, attn_dropout=attn_dropout)
    check_divides("patch_size", patch_size, "img_size", img_size)
    check_divides("pixel_size", pixel_size, "patch_size", patch_size)
    model = TNT(
        image_size=img_size,
        patch_dim=patch_dim,
        pixel_dim=pixel_dim,
        patch_size=patch_size,
        pixel_size=pixel_size,
        depth=depth,
        num_classes=1,
        channels=in_chans,
        heads=heads,
        dim_head=dim_head,
        ff_dropout=ff_dropout,
        attn_dropout=attn_dropout,
    )
    return Classifier(TNTBackbone(model), patch_dim, num_classes, code_size)


@register_model
def tnt_s(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    patch_size: int = 16,
    **arch: Any,
) -> Classifier:
    """timm ``tnt_s_patch16_224`` at ``img_size`` (position embeddings resize when loading weights)."""
    check_positive(patch_size=patch_size)
    check_divides("patch_size", patch_size, "img_size", img_size)
    named = dict(img_size=img_size, in_chans=in_chans, patch_size=patch_size)
    from timm.models.tnt import TNT as TimmTNT

    backbone = build_timm(TimmTNT, "tnt_s", named, arch, variant="tnt_s_patch16_224")
    return wrap_timm(
        backbone, num_classes=num_classes, code_size=code_size, arch={"patch_size": patch_size, **arch}
    )
