"""Vision Transformer from torchvision (``torchvision.models.VisionTransformer``), sized for small images.

torchvision's stem is fixed to 3 input channels and a strided convolution; we swap it for one of ``in_chans``
channels, or for a flatten-and-linear projection (``patch_embedding="linear"``, as in the ViT paper's text),
and drop the head so the backbone returns the class token.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from einops import rearrange
from torch import nn

from ._checks import check_bool, check_choice, check_divides, check_positive, check_probability
from ._registry import register_model
from ._wrap import Classifier

if TYPE_CHECKING:  # torchvision.models is imported where a ViT is built (it pulls TorchDynamo in)
    from torchvision.models.vision_transformer import VisionTransformer

__all__ = ["LinearPatchEmbed", "PatchEmbedding", "ViTBackbone", "build_vit_backbone", "check_vit_args"]

PatchEmbedding = Literal["conv", "linear"]


class LinearPatchEmbed(nn.Module):
    """Cut the image into ``patch_size`` squares, flatten each, and project it with one Linear.

    Returns ``[B, D, H/p, W/p]`` so it drops in where torchvision expects its convolutional stem.
    """

    def __init__(self, in_chans: int, hidden_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_chans * patch_size * patch_size, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = rearrange(x, "b c (h p1) (w p2) -> b h w (p1 p2 c)", p1=p, p2=p)
        return rearrange(self.proj(x), "b h w d -> b d h w")


class ViTBackbone(nn.Module):
    """torchvision's ViT up to the final LayerNorm; returns the class token ``[B, hidden_dim]``."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vit._process_input(x)
        cls = self.vit.class_token.expand(x.shape[0], -1, -1)
        return self.vit.encoder(torch.cat([cls, x], dim=1))[:, 0]


def check_vit_args(
    *,
    img_size: int,
    patch_size: int,
    num_layers: int,
    num_heads: int,
    hidden_dim: int,
    mlp_dim: int,
    dropout: float,
    attention_dropout: float,
) -> None:
    """The ViT arguments torchvision would otherwise reject with a bare assertion."""
    check_positive(
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
    )
    check_probability(dropout=dropout, attention_dropout=attention_dropout)
    check_divides("patch_size", patch_size, "img_size", img_size)
    check_divides("num_heads", num_heads, "hidden_dim", hidden_dim)


def build_vit_backbone(
    *,
    img_size: int,
    in_chans: int,
    patch_size: int,
    num_layers: int,
    num_heads: int,
    hidden_dim: int,
    mlp_dim: int,
    dropout: float,
    attention_dropout: float,
    patch_embedding: PatchEmbedding,
    qkv_bias: bool = True,
) -> ViTBackbone:
    """Validate the arguments, then build torchvision's ViT headless with the chosen stem.

    ``qkv_bias=False`` drops the bias of the query/key/value projection (the output projection keeps its own),
    as timm's and many hand-written ViTs build it.
    """
    check_vit_args(
        img_size=img_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        dropout=dropout,
        attention_dropout=attention_dropout,
    )
    check_choice("patch_embedding", patch_embedding, ("conv", "linear"))
    check_bool(qkv_bias=qkv_bias)
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        image_size=img_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        dropout=dropout,
        attention_dropout=attention_dropout,
        num_classes=1,
    )
    if patch_embedding == "linear":
        model.conv_proj = LinearPatchEmbed(in_chans, hidden_dim, patch_size)
    elif in_chans != 3:
        # Same stem and init as torchvision's, for any channel count.
        model.conv_proj = nn.Conv2d(in_chans, hidden_dim, kernel_size=patch_size, stride=patch_size)
        nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / (in_chans * patch_size * patch_size)))
        nn.init.zeros_(model.conv_proj.bias)
    if not qkv_bias:
        for layer in model.encoder.layers:
            layer.self_attention.register_parameter("in_proj_bias", None)
    model.heads = nn.Identity()
    return ViTBackbone(model)


@register_model
def vit(
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
) -> Classifier:
    """torchvision ViT; defaults suit 32px inputs (64 tokens of 4x4 pixels)."""
    backbone = build_vit_backbone(
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
    return Classifier(backbone, hidden_dim, num_classes, code_size)
