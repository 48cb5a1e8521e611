"""Inception-style random resized crop plus horizontal flip (the ImageNet training recipe)."""

from __future__ import annotations

import torch

from bench.baseline import functional as AF
from worker.augment.base import Augment


class RandomResizedCrop(Augment):
    """A crop of 8% to 100% of the area (``scale``) with aspect ratio 3/4 to 4/3, resized back to the image
    size (bilinear), then a left-right flip with p = 1/2; every image its own crop. ``scale=(0.5, 1.0)`` is the
    milder variant for small images.
    """

    name = "randomresizedcrop"

    def __init__(
        self,
        *,
        img_size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        super().__init__(img_size=img_size)
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(
                f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale=}, {ratio=}"
            )
        self.scale = scale
        self.ratio = ratio

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        boxes = AF.random_resized_crop_boxes(generator, n, h, w, self.scale, self.ratio, images.device)
        flip = AF.coin(generator, n, 0.5, images.device)
        return AF.hflip(AF.resized_crop(images, boxes), flip)
