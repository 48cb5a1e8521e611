"""Perceiver IO (Jaegle et al. 2021) from perceiver-pytorch, for classification.

The image becomes a set of tokens (``tokens``): one per pixel or per patch, each with Fourier features of its
position, or a single ``flat`` token of all ``C*H*W`` values. Latents cross-attend to them once, self-attend
``depth`` times, and one query decodes the latents; the decoded query is the embedding and the classifier maps
it to logits. The query is learned, or (``query="fixed"``) a random tensor drawn once at build time and kept
as a buffer (saved with the model, never trained).
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange, repeat
from perceiver_pytorch import PerceiverIO
from perceiver_pytorch.perceiver_pytorch import fourier_encode
from torch import nn

from ._checks import check_bool, check_choice, check_divides, check_probability
from ._registry import register_model
from ._wrap import Classifier
from .perceiver import check_perceiver_args

__all__ = ["ImageTokens", "PerceiverIOBackbone", "Query", "Tokens"]

Tokens = Literal["pixels", "patches", "flat"]
Query = Literal["learned", "fixed"]


class ImageTokens(nn.Module):
    """``[B, C, H, W]`` to ``[B, N, token_dim]`` tokens; no weights, so any size works but ``flat``."""

    def __init__(
        self,
        tokens: Tokens,
        *,
        img_size: int,
        in_chans: int,
        patch_size: int,
        num_freq_bands: int,
        max_freq: float,
        fourier_encode_data: bool,
    ) -> None:
        super().__init__()
        self.tokens = tokens
        self.patch_size = patch_size if tokens == "patches" else 1
        self.num_freq_bands = num_freq_bands
        self.max_freq = max_freq
        self.fourier = fourier_encode_data and tokens != "flat"
        if tokens == "flat":
            self.token_dim = in_chans * img_size * img_size
        else:
            self.token_dim = in_chans * self.patch_size**2 + (
                2 * (2 * num_freq_bands + 1) if self.fourier else 0
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens == "flat":
            return x.flatten(1).unsqueeze(1)
        p = self.patch_size
        x = rearrange(x, "b c (h p1) (w p2) -> b h w (p1 p2 c)", p1=p, p2=p)
        if self.fourier:
            axes = [torch.linspace(-1.0, 1.0, steps=n, device=x.device, dtype=x.dtype) for n in x.shape[1:3]]
            pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
            enc = rearrange(fourier_encode(pos, self.max_freq, self.num_freq_bands), "h w n d -> h w (n d)")
            x = torch.cat([x, repeat(enc, "h w d -> b h w d", b=x.shape[0])], dim=-1)
        return rearrange(x, "b h w d -> b (h w) d")


class PerceiverIOBackbone(nn.Module):
    """Tokens, PerceiverIO, and one query (learned or fixed) decoded from the latents: ``[B, queries_dim]``."""

    query: torch.Tensor

    def __init__(
        self, tokenizer: ImageTokens, perceiver_io: PerceiverIO, queries_dim: int, query: Query = "learned"
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.perceiver_io = perceiver_io
        if query == "learned":
            self.query = nn.Parameter(torch.randn(1, queries_dim))
        else:
            self.register_buffer("query", torch.randn(1, queries_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.perceiver_io(self.tokenizer(x), queries=self.query)[:, 0]


@register_model
def perceiver_io(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    tokens: Tokens = "pixels",
    patch_size: int = 4,
    num_freq_bands: int = 6,
    max_freq: float = 10.0,
    fourier_encode_data: bool = True,
    depth: int = 4,
    queries_dim: int = 128,
    num_latents: int = 64,
    latent_dim: int = 128,
    cross_heads: int = 1,
    latent_heads: int = 4,
    cross_dim_head: int = 32,
    latent_dim_head: int = 32,
    weight_tie_layers: bool = False,
    decoder_ff: bool = False,
    seq_dropout_prob: float = 0.0,
    query: Query = "learned",
) -> Classifier:
    """PerceiverIO classifier; ``patch_size`` applies to ``tokens="patches"``, Fourier keywords to all but flat;
    ``query`` is a learned parameter or a fixed random buffer."""
    check_choice("tokens", tokens, ("pixels", "patches", "flat"))
    check_choice("query", query, ("learned", "fixed"))
    check_perceiver_args(
        num_freq_bands=num_freq_bands,
        max_freq=max_freq,
        patch_size=patch_size,
        depth=depth,
        queries_dim=queries_dim,
        num_latents=num_latents,
        latent_dim=latent_dim,
        cross_heads=cross_heads,
        latent_heads=latent_heads,
        cross_dim_head=cross_dim_head,
        latent_dim_head=latent_dim_head,
    )
    check_probability(seq_dropout_prob=seq_dropout_prob)
    check_bool(
        fourier_encode_data=fourier_encode_data, weight_tie_layers=weight_tie_layers, decoder_ff=decoder_ff
    )
    if tokens == "patches":
        check_divides("patch_size", patch_size, "img_size", img_size)
    tokenizer = ImageTokens(
        tokens,
        img_size=img_size,
        in_chans=in_chans,
        patch_size=patch_size,
        num_freq_bands=num_freq_bands,
        max_freq=max_freq,
        fourier_encode_data=fourier_encode_data,
    )
    model = PerceiverIO(
        depth=depth,
        dim=tokenizer.token_dim,
        queries_dim=queries_dim,
        logits_dim=None,
        num_latents=num_latents,
        latent_dim=latent_dim,
        cross_heads=cross_heads,
        latent_heads=latent_heads,
        cross_dim_head=cross_dim_head,
        latent_dim_head=latent_dim_head,
        weight_tie_layers=weight_tie_layers,
        decoder_ff=decoder_ff,
        seq_dropout_prob=seq_dropout_prob,
    )
    backbone = PerceiverIOBackbone(tokenizer, model, queries_dim, query)
    return Classifier(backbone, queries_dim, num_classes, code_size)
