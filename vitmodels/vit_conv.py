"""A ViT whose every projection is a bias-free 1x1 convolution.

Tokens travel as ``[B, dim, T]``; the patch projection, the attention's qkv and output projections and both MLP
layers are ``Conv1d(kernel_size=1, bias=False)``. Functionally a bias-free linear layer, but the model is a
pure convolutional network, which some pruning, quantisation and hardware tools require. Pre-norm blocks, a
class token, a learned position embedding and a final LayerNorm, as in the original ViT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._checks import check_divides, check_positive, check_probability
from ._registry import register_model
from ._wrap import Classifier

__all__ = ["ConvViT"]


def conv1x1(in_dim: int, out_dim: int) -> nn.Conv1d:
    return nn.Conv1d(in_dim, out_dim, kernel_size=1, bias=False)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of ``[B, C, T]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvAttention(nn.Module):
    """Multi-head self-attention with 1x1-conv projections; ``attention_dropout`` drops attention weights,
    ``dropout`` the output projection."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.qkv = conv1x1(dim, 3 * heads * dim_head)
        self.out = nn.Sequential(conv1x1(heads * dim_head, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b (n h d) t -> n b h t d", n=3, h=self.heads)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attention_dropout if self.training else 0.0
        )
        return self.out(rearrange(y, "b h t d -> b (h d) t"))


class ConvBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float, attention_dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = ConvAttention(dim, heads, dim_head, dropout, attention_dropout)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = nn.Sequential(
            conv1x1(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), conv1x1(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ConvViT(nn.Module):
    """Patches to tokens by a 1x1 conv over space-to-depth pixels; returns the normed class token ``[B, dim]``."""

    def __init__(
        self,
        *,
        img_size: int,
        in_chans: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        num_patches = (img_size // patch_size) ** 2
        self.patch_proj = conv1x1(in_chans * patch_size * patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, dim, 1))
        self.pos_embedding = nn.Parameter(torch.randn(1, dim, num_patches + 1) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(ConvBlock(dim, heads, dim_head, mlp_dim, dropout, attention_dropout) for _ in range(depth))
        )
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = self.patch_proj(rearrange(x, "b c (h p1) (w p2) -> b (p1 p2 c) (h w)", p1=p, p2=p))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=2) + self.pos_embedding
        x = self.norm(self.blocks(self.dropout(x)))
        return x[:, :, 0]


@register_model
def vit_conv(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    dim: int = 128,
    depth: int = 6,
    heads: int = 4,
    dim_head: int = 32,
    mlp_dim: int = 256,
    patch_size: int = 4,
    dropout: float = 0.0,
    attention_dropout: float | None = None,
) -> Classifier:
    """ViT of 1x1 convolutions; defaults suit 32px inputs (64 tokens of 4x4 pixels).

    ``dropout`` drops the embedded tokens, the attention's output and both MLP layers' outputs;
    ``attention_dropout`` the attention weights (None: the same as ``dropout``). Seed 004's conv-only ViT
    (lucidrains' vit-pytorch of then) drops no attention weights: ``dropout=0.1, attention_dropout=0.0``.
    """
    check_positive(
        dim=dim, depth=depth, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, patch_size=patch_size
    )
    if attention_dropout is None:
        attention_dropout = dropout
    check_probability(dropout=dropout, attention_dropout=attention_dropout)
    check_divides("patch_size", patch_size, "img_size", img_size)
    backbone = ConvViT(
        img_size=img_size,
        in_chans=in_chans,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
        dim_head=dim_head,
        mlp_dim=mlp_dim,
        dropout=dropout,
        attention_dropout=attention_dropout,
    )
    return Classifier(backbone, dim, num_classes, code_size, arch=dict(attention_dropout=attention_dropout))
