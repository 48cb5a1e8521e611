"""Kaggle's Dogs vs. Cats training set (``dogs_vs_cats/train/cat.N.jpg``, ``dog.N.jpg``), file-backed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from worker.data._registry import register_dataset
from worker.data.base import DatasetLoader
from worker.data.splits import RawData, RawSplit
from worker.exceptions import DataFormatError

CLASSES = ["cat", "dog"]
_NAME = re.compile(r"^(cat|dog)\.(\d+)\.jpe?g$", re.IGNORECASE)


@register_dataset
class DogsVsCats(DatasetLoader):
    """25k labelled photos of varying size, decoded per item; a stratified hold-out for validation, 20% unless
    ``dataset.val_fraction`` says (0: none; Kaggle's ``test1`` is unlabelled). Normalised with the ImageNet statistics, the usual choice for photos.
    """

    name = "dogs_vs_cats"
    folder = "dogs_vs_cats"
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    source = (
        "Get train.zip from https://www.kaggle.com/c/dogs-vs-cats/data (kaggle competitions download -c "
        "dogs-vs-cats) and unzip it so that <data dir>/dogs_vs_cats/train/cat.0.jpg exists. There is no automatic "
        "download: Kaggle needs an account."
    )

    def required(self) -> list[Path]:
        return [self.path / "train"]

    def read(self, *, with_val: bool) -> RawData:
        found = []
        for path in (self.path / "train").iterdir():
            match = _NAME.match(path.name)
            if match:
                found.append((CLASSES.index(match[1].lower()), int(match[2]), path))
        if not found:
            raise DataFormatError(f"no cat.N.jpg or dog.N.jpg files in {self.path / 'train'}")
        found.sort()
        labels = np.asarray([label for label, _, _ in found])
        return RawData(
            train=RawSplit(labels, files=[p for _, _, p in found]), val=None, classes=list(CLASSES)
        )
