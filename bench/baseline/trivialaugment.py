"""TrivialAugment (Mueller and Hutter, 2021), wide search space, one random operation per image."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.baseline import functional as AF
from worker.augment.base import Augment

NUM_BINS = 31
OPS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
    "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)  # fmt: skip


class TrivialAugment(Augment):
    """torchvision's ``TrivialAugmentWide`` per sample: each image gets one of 14 operations with a uniformly
    drawn strength bin (of 31) and sign. Geometric operations use nearest sampling and fill with 0, as there.
    Operations are grouped so the batch needs one call per operation, not per image.
    """

    name = "trivialaugment"

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, dev = images.shape[0], images.device
        op = AF.randint(generator, 0, len(OPS), n, dev)
        level = AF.randint(generator, 0, NUM_BINS, n, dev).float() / (NUM_BINS - 1)  # 0..1
        sign = torch.where(AF.coin(generator, n, 0.5, dev), -1.0, 1.0)
        strength = sign * 0.99 * level  # shear and the enhance factors
        pixels = sign * torch.trunc(32.0 * level)  # translation: up to 32 px in the wide space
        zeros, ones, zeros2 = (
            torch.zeros(n, device=dev),
            torch.ones(n, device=dev),
            torch.zeros(n, 2, device=dev),
        )
        shear_deg = torch.rad2deg(torch.atan(strength))
        bits = 8 - torch.round(level * 6).long()  # 8 .. 2
        threshold = 255.0 * (1 - level)

        def geometric(angle: torch.Tensor, translate: torch.Tensor, shear: torch.Tensor) -> Callable:
            return lambda x, i: AF.affine(x, angle[i], translate[i], ones[i], shear[i], mode="nearest")

        def enhance(fn: Callable) -> Callable:
            return lambda x, i: AF.to_uint8(fn(x.float(), 1.0 + strength[i]))

        table: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
            "shear_x": geometric(zeros, zeros2, torch.stack([shear_deg, zeros], 1)),
            "shear_y": geometric(zeros, zeros2, torch.stack([zeros, shear_deg], 1)),
            "translate_x": geometric(zeros, torch.stack([pixels, zeros], 1), zeros2),
            "translate_y": geometric(zeros, torch.stack([zeros, pixels], 1), zeros2),
            "rotate": geometric(sign * 135.0 * level, zeros2, zeros2),
            "brightness": enhance(AF.adjust_brightness),
            "color": enhance(AF.adjust_saturation),
            "contrast": enhance(AF.adjust_contrast),
            "sharpness": lambda x, i: AF.sharpness(x, 1.0 + strength[i]),
            "posterize": lambda x, i: AF.posterize(x, bits[i]),
            "solarize": lambda x, i: AF.solarize(x, threshold[i]),
            "autocontrast": lambda x, i: AF.autocontrast(x),
            "equalize": lambda x, i: AF.equalize(x),
        }
        out = images.clone()
        for k, name in enumerate(OPS):
            if name in table:
                AF.apply_to(images, op == k, table[name], out=out)
        return out
