"""scikit-learn's bundled handwritten digits: 1797 8x8 images, no download needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worker.data._registry import register_dataset
from worker.data.base import DatasetLoader
from worker.data.splits import RawData, RawSplit


@register_dataset
class Digits(DatasetLoader):
    """``sklearn.datasets.load_digits``: 16 gray levels scaled to 0..255; stratified 20% validation."""

    name = "digits"
    native_chans = 1
    source = "It ships with scikit-learn (sklearn.datasets.load_digits)."

    def required(self) -> list[Path]:
        return []

    def read(self, *, with_val: bool) -> RawData:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        tensor = torch.from_numpy(images)[:, None]  # [N, 1, 8, 8]
        classes = [str(c) for c in bunch.target_names]
        return RawData(train=RawSplit(bunch.target, images=tensor), val=None, classes=classes)
