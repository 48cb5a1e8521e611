"""The Perceiver-style mix: every image gets 1 to 4 distinct transforms drawn from a fixed list."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.baseline import functional as AF
from worker.augment.base import Augment

Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Perceiver(Augment):
    """Per image, 1 to 4 distinct transforms (uniformly many, uniformly which) out of: colour jitter 0.2
    (brightness, contrast, saturation and hue each 0.2), horizontal flip, vertical flip, rotation by 0 to 180
    degrees, affine (rotation +-15 degrees, translation +-20%, scale 0.8 to 1.2, x shear +-15 degrees),
    equalise, autocontrast, sharpness factor 2, and, for images of 96 px or more, a random resized crop of
    scale 0.5 to 1. The chosen transforms run in the list's order; geometric ones fill with 0.
    """

    name = "perceiver"
    OPS = (
        "colorjitter",
        "hflip",
        "vflip",
        "rotate",
        "affine",
        "equalize",
        "autocontrast",
        "sharpness",
        "crop",
    )
    max_ops = 4

    def __init__(self, *, img_size: int) -> None:
        super().__init__(img_size=img_size)
        self.ops = self.OPS if img_size >= 96 else self.OPS[:-1]

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, dev = images.shape[0], images.device
        h, w = images.shape[-2:]
        k = len(self.ops)
        # how many, then which: the ranks of random keys give each image a random subset of that size
        count = AF.randint(generator, 1, min(self.max_ops, k) + 1, n, dev)
        rank = AF.uniform(generator, (n, k), 0.0, 1.0, dev).argsort(1).argsort(1)
        chosen = rank < count[:, None]
        ones, zeros2 = torch.ones(n, device=dev), torch.zeros(n, 2, device=dev)
        rotation = AF.uniform(generator, n, 0.0, 180.0, dev)
        angle = AF.uniform(generator, n, -15.0, 15.0, dev)
        translate = AF.uniform(generator, (n, 2), -0.2, 0.2, dev) * torch.tensor([w, h], device=dev)
        translate = translate.round()  # torchvision's RandomAffine draws whole pixels
        scale = AF.uniform(generator, n, 0.8, 1.2, dev)
        shear = torch.stack([AF.uniform(generator, n, -15.0, 15.0, dev), torch.zeros(n, device=dev)], 1)
        jitter = AF.jitter_factors(generator, n, 0.2, 0.2, 0.2, 0.2, dev)
        boxes = AF.random_resized_crop_boxes(generator, n, h, w, (0.5, 1.0), (3 / 4, 4 / 3), dev)

        table: dict[str, Op] = {
            "colorjitter": lambda x, i: AF.color_jitter(x, jitter[i]),
            "hflip": lambda x, i: x.flip(-1),
            "vflip": lambda x, i: x.flip(-2),
            "rotate": lambda x, i: AF.affine(x, rotation[i], zeros2[i], ones[i], zeros2[i]),
            "affine": lambda x, i: AF.affine(x, angle[i], translate[i], scale[i], shear[i]),
            "equalize": lambda x, i: AF.equalize(x),
            "autocontrast": lambda x, i: AF.autocontrast(x),
            "sharpness": lambda x, i: AF.sharpness(x, 2.0 * ones[i]),
            "crop": lambda x, i: AF.resized_crop(x, boxes[i]),
        }
        out = images
        for j, name in enumerate(self.ops):
            out = AF.apply_to(out, chosen[:, j], table[name])
        return out
