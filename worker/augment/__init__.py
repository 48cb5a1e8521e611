"""Augmentation: presets and a spec's own pipelines of kornia ops; :func:`build_augment` makes either.

Pipelines run on whole uint8 batches on the training device, every image with its own random parameters, all
drawn from the generator passed in (kornia's global-RNG draws are seeded from it). :func:`normalize` turns an
augmented batch into the model's input.
"""

from __future__ import annotations

from worker.augment._registry import build_augment, list_augments, preset_recipe
from worker.augment.base import Augment
from worker.augment.fastpath import normalize
from worker.augment.pipeline import Pipeline

__all__ = ["Augment", "Pipeline", "build_augment", "list_augments", "normalize", "preset_recipe"]
