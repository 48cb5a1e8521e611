"""The classic CIFAR recipe: random crop of the padded image plus horizontal flip."""

from __future__ import annotations

import torch

from bench.baseline import functional as AF
from worker.augment.base import Augment


class Standard(Augment):
    """Pad by 4 pixels (reflect) at 32 px, scaled as ``img_size // 8`` above that, crop back at a random
    offset, and flip left-right with probability 1/2; every image its own offset and flip.
    """

    name = "standard"

    def __init__(self, *, img_size: int, padding: int | None = None, mode: AF.PadMode = "reflect") -> None:
        super().__init__(img_size=img_size)
        self.padding = max(4, img_size // 8) if padding is None else padding
        self.mode: AF.PadMode = mode

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, dev = images.shape[0], images.device
        pad = min(self.padding, images.shape[-1] - 1, images.shape[-2] - 1)
        offsets = AF.randint(generator, -pad, pad + 1, (2, n), dev)
        flip = AF.coin(generator, n, 0.5, dev)
        return AF.shifted_crop(images, offsets[0], offsets[1], flip, mode=self.mode)
