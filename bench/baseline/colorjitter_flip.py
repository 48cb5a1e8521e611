"""Colour jitter plus horizontal flip: photometric augmentation without moving pixels."""

from __future__ import annotations

import torch

from bench.baseline import functional as AF
from worker.augment.base import Augment


class ColorJitterFlip(Augment):
    """``ColorJitter(0.4, 0.4, 0.4, 0.1)`` (the SimCLR/timm strengths) and a left-right flip with p = 1/2,
    every image with its own factors. Saturation and hue leave single-channel images alone.
    """

    name = "colorjitter_flip"

    def __init__(
        self,
        *,
        img_size: int,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
    ) -> None:
        super().__init__(img_size=img_size)
        self.strengths = (brightness, contrast, saturation, hue)

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, dev = images.shape[0], images.device
        factors = AF.jitter_factors(generator, n, *self.strengths, dev)
        flip = AF.coin(generator, n, 0.5, dev)
        return AF.hflip(AF.color_jitter(images, factors), flip)
