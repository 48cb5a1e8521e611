"""Augmentation presets: one per module, registered by name; :func:`build_augment` makes one.

Presets run on whole uint8 batches on the training device, every image with its own random parameters, all
drawn from the generator passed in. :func:`normalize` turns an augmented batch into the model's input.
"""

from __future__ import annotations

from worker.augment import (  # noqa: F401  (importing a module registers its preset)
    colorjitter_flip,
    cutout,
    none,
    perceiver,
    randomresizedcrop,
    standard,
    trivialaugment,
)
from worker.augment._registry import build_augment, list_augments, register_augment
from worker.augment.base import Augment
from worker.augment.functional import normalize

__all__ = ["Augment", "build_augment", "list_augments", "normalize", "register_augment"]
