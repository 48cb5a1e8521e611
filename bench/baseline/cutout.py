"""Cutout (DeVries and Taylor, 2017) on top of the standard crop and flip."""

from __future__ import annotations

import torch

from bench.baseline import functional as AF
from bench.baseline.standard import Standard


class Cutout(Standard):
    """The ``standard`` crop and flip, then a square of half the image side zeroed at a random centre (it may
    hang over the border, as in the paper), a different square for every image.
    """

    name = "cutout"

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = super().apply(images, generator)
        n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        cy = AF.randint(generator, 0, h, n, images.device)
        cx = AF.randint(generator, 0, w, n, images.device)
        return AF.erase(images, cy, cx, max(1, min(h, w) // 2))
