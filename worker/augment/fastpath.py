"""The hand-written fast path: crop of the padded image plus left-right flip, as integer gathers.

kornia's ``RandomCrop(padding=...)`` pads and crops through its general crop machinery and its
``RandomHorizontalFlip`` selects per sample; for the CIFAR recipe, on the hot path of every step, one gather is
several times faster (``bench/augment.py``), so a pipeline that starts with those two ops runs this instead
(:mod:`worker.augment.pipeline`). Draws come from an explicit generator, then move to the images' device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

PadMode = Literal["reflect", "zeros"]


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images / 255 - mean) / std`` per channel, as float32 on the images' device."""
    if images.ndim != 4 or images.shape[1] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"need [N, C, H, W] with one mean and std per channel, got {tuple(images.shape)}, "
            f"{len(mean)} means, {len(std)} stds"
        )
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def uniform(
    generator: torch.Generator, shape: int | tuple[int, ...], low: float, high: float, device: torch.device
) -> torch.Tensor:
    """Float32 uniform in ``[low, high)``."""
    shape = (shape,) if isinstance(shape, int) else shape
    u = torch.rand(shape, generator=generator, device=generator.device).to(device)
    return low + (high - low) * u


def coin(generator: torch.Generator, n: int, p: float, device: torch.device) -> torch.Tensor:
    """Bool ``[n]``, each True with probability ``p``."""
    return uniform(generator, n, 0.0, 1.0, device) < p


def randint(
    generator: torch.Generator, low: int, high: int, shape: int | tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Int64 uniform in ``[low, high)``."""
    shape = (shape,) if isinstance(shape, int) else shape
    return torch.randint(low, high, shape, generator=generator, device=generator.device).to(device)


def select(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per sample: ``a`` where ``mask`` (bool ``[N]``) is True, else ``b``."""
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


def hflip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images where ``mask`` is True."""
    return select(mask, images.flip(-1), images)


def _pad_index(index: torch.Tensor, size: int, mode: PadMode) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Map possibly out-of-range indices into ``[0, size)``: reflected, or clamped with a validity mask."""
    if mode == "reflect":
        index = index.abs()
        index = torch.where(index > size - 1, 2 * (size - 1) - index, index)
        return index.clamp(0, size - 1), None
    valid = (index >= 0) & (index < size)
    return index.clamp(0, size - 1), valid


def shifted_crop(
    images: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flip: torch.Tensor | None = None,
    mode: PadMode = "reflect",
) -> torch.Tensor:
    """Crop each image at offset ``(dy, dx)`` (any integers) of its infinite padded self, same size.

    Equivalent to padding by ``max |offset|`` and cropping at ``padding + offset``; exact integer gathers,
    no interpolation. ``flip`` (bool ``[N]``) mirrors the crop left-right.
    """
    n, c, h, w = images.shape
    rows = dy.view(-1, 1) + torch.arange(h, device=images.device)
    cols = dx.view(-1, 1) + torch.arange(w, device=images.device)
    if flip is not None:
        cols = torch.where(flip.view(-1, 1), cols.flip(1), cols)
    rows, row_ok = _pad_index(rows, h, mode)
    cols, col_ok = _pad_index(cols, w, mode)
    out = images.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w))
    out = out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))
    if row_ok is not None and col_ok is not None:
        out = out * (row_ok.view(n, 1, h, 1) & col_ok.view(n, 1, 1, w))
    return out
