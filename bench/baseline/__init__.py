"""The hand-written augmentation presets kornia replaced, kept only as the baseline of ``bench/augment.py``.

They are not registered and no spec reaches them: ``worker.augment`` builds every preset from kornia ops.
"""

from __future__ import annotations

from bench.baseline.colorjitter_flip import ColorJitterFlip
from bench.baseline.cutout import Cutout
from bench.baseline.perceiver import Perceiver
from bench.baseline.randomresizedcrop import RandomResizedCrop
from bench.baseline.standard import Standard
from bench.baseline.trivialaugment import TrivialAugment

BASELINES = {cls.name: cls for cls in (Standard, Cutout, ColorJitterFlip, RandomResizedCrop, TrivialAugment, Perceiver)}
