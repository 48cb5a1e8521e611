"""The identity preset."""

from __future__ import annotations

import torch

from worker.augment._registry import register_augment
from worker.augment.base import Augment


@register_augment
class NoAugment(Augment):
    """Returns the batch unchanged (the same tensor: nothing is copied)."""

    name = "none"
    random = False

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images
