"""Perceiver (Jaegle et al. 2021) from perceiver-pytorch: latents cross-attend to every pixel.

Positions enter as Fourier features computed from the input's own size, so one model takes images of any
size. Inputs arrive NCHW and are turned into the NHWC the upstream model expects.
"""

from __future__ import annotations

import torch
from perceiver_pytorch import Perceiver
from torch import nn

from ._checks import check_bool, check_positive, check_probability
from ._registry import register_model
from ._wrap import Classifier
from .exceptions import InvalidArchError

__all__ = ["PerceiverBackbone", "check_perceiver_args"]


class PerceiverBackbone(nn.Module):
    """perceiver-pytorch's Perceiver with the classifier Linear removed: mean-pooled, normed latents."""

    def __init__(self, perceiver: Perceiver) -> None:
        super().__init__()
        perceiver.to_logits[2] = nn.Identity()
        self.perceiver = perceiver

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.perceiver(x.permute(0, 2, 3, 1))


def check_perceiver_args(
    *,
    num_freq_bands: int,
    max_freq: float,
    **sizes: int,
) -> None:
    """Positive sizes and a positive maximum frequency."""
    check_positive(num_freq_bands=num_freq_bands, **sizes)
    if isinstance(max_freq, bool) or not isinstance(max_freq, (int, float)) or max_freq <= 0:
        raise InvalidArchError(f"max_freq must be a positive number, got {max_freq=}")


@register_model
def perceiver(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    num_freq_bands: int = 6,
    max_freq: float = 10.0,
    depth: int = 2,
    num_latents: int = 64,
    latent_dim: int = 128,
    cross_heads: int = 1,
    latent_heads: int = 4,
    cross_dim_head: int = 32,
    latent_dim_head: int = 32,
    attn_dropout: float = 0.0,
    ff_dropout: float = 0.0,
    weight_tie_layers: bool = False,
    fourier_encode_data: bool = True,
    self_per_cross_attn: int = 2,
) -> Classifier:
    """perceiver-pytorch Perceiver with small defaults; ``img_size`` does not change the weights."""
    check_perceiver_args(
        num_freq_bands=num_freq_bands,
        max_freq=max_freq,
        depth=depth,
        num_latents=num_latents,
        latent_dim=latent_dim,
        cross_heads=cross_heads,
        latent_heads=latent_heads,
        cross_dim_head=cross_dim_head,
        latent_dim_head=latent_dim_head,
        self_per_cross_attn=self_per_cross_attn,
    )
    check_probability(attn_dropout=attn_dropout, ff_dropout=ff_dropout)
    check_bool(weight_tie_layers=weight_tie_layers, fourier_encode_data=fourier_encode_data)
    model = Perceiver(
        num_freq_bands=num_freq_bands,
        depth=depth,
        max_freq=max_freq,
        input_channels=in_chans,
        input_axis=2,
        num_latents=num_latents,
        latent_dim=latent_dim,
        cross_heads=cross_heads,
        latent_heads=latent_heads,
        cross_dim_head=cross_dim_head,
        latent_dim_head=latent_dim_head,
        num_classes=1,
        attn_dropout=attn_dropout,
        ff_dropout=ff_dropout,
        weight_tie_layers=weight_tie_layers,
        fourier_encode_data=fourier_encode_data,
        self_per_cross_attn=self_per_cross_attn,
    )
    return Classifier(PerceiverBackbone(model), latent_dim, num_classes, code_size)
