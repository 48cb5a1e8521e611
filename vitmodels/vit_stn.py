"""A spatial transformer network in front of a ViT (Jaderberg et al. 2015): learn to undo affine distortion.

A small localisation CNN predicts an affine matrix per image; ``affine_grid``/``grid_sample`` warp the input
with it and the torchvision ViT classifies the warped image. The last localisation layer starts at the
identity transform, so training begins from the plain ViT. ``warp(x)`` returns the warped input and
``last_warped`` keeps the latest one (detached) for visualisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_positive
from ._registry import register_model
from ._wrap import Classifier
from .exceptions import InvalidArchError
from .vit import PatchEmbedding, build_vit_backbone

__all__ = ["Localisation", "STNClassifier", "SpatialTransformer", "add_spatial_transformer"]

# Two 2x2 max-pools in the localisation net need at least this many pixels.
MIN_IMG_SIZE = 4


class Localisation(nn.Module):
    """Predicts ``[B, 2, 3]`` affine matrices; initialised to output the identity."""

    def __init__(self, in_chans: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, channels, kernel_size=5, padding=2),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * channels * 16, hidden),
            nn.ReLU(inplace=True),
        )
        self.theta = nn.Linear(hidden, 6)
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], device=self.theta.bias.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.theta(self.features(x)).view(-1, 2, 3)


class SpatialTransformer(nn.Module):
    """Warp the input by the predicted affine transform, then run ``net`` on it."""

    def __init__(self, localisation: Localisation, net: nn.Module) -> None:
        super().__init__()
        self.localisation = localisation
        self.net = net
        self.last_warped: torch.Tensor | None = None

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.localisation(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warped = self.warp(x)
        self.last_warped = warped.detach()
        return self.net(warped)


class STNClassifier(Classifier):
    """A Classifier whose backbone is a :class:`SpatialTransformer`; exposes its warp."""

    backbone: SpatialTransformer

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the transformer network sees it, ``[B, C, H, W]``."""
        return self.backbone.warp(x)

    @property
    def last_warped(self) -> torch.Tensor | None:
        """The warped input of the latest forward pass (detached)."""
        return self.backbone.last_warped


def add_spatial_transformer(model: nn.Module, *, img_size: int, in_chans: int, channels: int = 8,
                            hidden: int = 32) -> STNClassifier:
    """Put a spatial transformer in front of any :class:`Classifier`'s backbone, keeping its code layer and head.

    The localisation net starts at the identity transform, so training begins from the plain model.
    """
    check_positive(stn_channels=channels, stn_hidden=hidden)
    if img_size < MIN_IMG_SIZE:
        raise InvalidArchError(f"img_size must be at least {MIN_IMG_SIZE} for the localisation net, got {img_size=}")
    if not isinstance(model, Classifier):
        raise InvalidArchError(f"a spatial transformer goes in front of a Classifier, not {type(model).__name__}")
    head_in = model.code.in_features if isinstance(model.code, nn.Linear) else model.head.in_features
    wrapped = STNClassifier(
        SpatialTransformer(Localisation(in_chans, channels, hidden), model.backbone), head_in, model.num_classes,
        arch=model.arch,
    )
    wrapped.code, wrapped.head, wrapped.num_features = model.code, model.head, model.num_features
    return wrapped


@register_model
def vit_stn(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    patch_size: int = 4,
    num_layers: int = 6,
    num_heads: int = 4,
    hidden_dim: int = 128,
    mlp_dim: int = 256,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    patch_embedding: PatchEmbedding = "conv",
    qkv_bias: bool = True,
    stn_channels: int = 8,
    stn_hidden: int = 32,
) -> STNClassifier:
    """STN + torchvision ViT; the ViT keywords are ``vit``'s, ``stn_*`` size the localisation net."""
    check_positive(stn_channels=stn_channels, stn_hidden=stn_hidden)
    if img_size < MIN_IMG_SIZE:
        raise InvalidArchError(
            f"img_size must be at least {MIN_IMG_SIZE} for the localisation net, got {img_size=}"
        )
    vit = build_vit_backbone(
        img_size=img_size,
        in_chans=in_chans,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        dropout=dropout,
        attention_dropout=attention_dropout,
        patch_embedding=patch_embedding,
        qkv_bias=qkv_bias,
    )
    backbone = SpatialTransformer(Localisation(in_chans, stn_channels, stn_hidden), vit)
    return STNClassifier(backbone, hidden_dim, num_classes, code_size)
