"""Datasets: one loader per module, registered by name; :func:`load_dataset` returns train/val splits.

Items are ``(uint8 [C, H, W], label)`` at the requested size and channel count; normalisation happens on
the batch (see :func:`worker.augment.normalize`) with the split's ``mean`` and ``std``.
"""

from __future__ import annotations

from worker.data import (  # noqa: F401  (importing a module registers its loader)
    cifar10,
    digits,
    dogs_vs_cats,
    fashion_mnist,
    imagefolder,
    stl10,
    synthetic,
    tiny_imagenet,
)
from worker.data._registry import get_loader, list_datasets, load_dataset, register_dataset
from worker.data.base import DatasetLoader
from worker.data.images import FileImageSet, ImageSet, TensorImageSet
from worker.data.splits import DatasetSplits, RawData, RawSplit

__all__ = [
    "DatasetLoader",
    "DatasetSplits",
    "FileImageSet",
    "ImageSet",
    "RawData",
    "RawSplit",
    "TensorImageSet",
    "get_loader",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
