"""STL-10 binaries (``stl10_binary``): 5k labelled 96x96 training images, 8k test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worker.data._registry import register_dataset
from worker.data.base import DatasetLoader, read_classes_file
from worker.data.splits import RawData, RawSplit
from worker.exceptions import DataFormatError

SIDE = 96


def read_stl_images(path: Path) -> torch.Tensor:
    """uint8 ``[N, 3, 96, 96]`` from an STL-10 ``*_X.bin`` (each image stored column-major, plane by plane)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * SIDE * SIDE):
        raise DataFormatError(f"{path}: {raw.size} bytes is not a whole number of 3x96x96 images")
    return torch.from_numpy(raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2).copy())


def read_stl_labels(path: Path) -> np.ndarray:
    """Labels 0..9 from an STL-10 ``*_y.bin`` (stored as 1..10)."""
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{path}: labels must be 1..10, got {labels.min() + 1}..{labels.max() + 1}")
    return labels


@register_dataset
class STL10(DatasetLoader):
    """The labelled ``train`` split and the ``test`` split as validation (the unlabelled 100k are unused)."""

    name = "stl10"
    folder = "stl10_binary"
    official_val = True
    mean = (0.4467, 0.4398, 0.4066)
    std = (0.2603, 0.2566, 0.2713)
    source = (
        "Get stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ and unpack it into the data "
        "directory, or run torchvision.datasets.STL10(root, split='train', download=True)."
    )

    def required(self) -> list[Path]:
        names = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt")
        return [self.path / n for n in names]

    def fetch(self) -> None:
        from torchvision.datasets import STL10 as TorchSTL10

        TorchSTL10(str(self.root), split="train", download=True)

    def read(self, *, with_val: bool) -> RawData:
        classes = read_classes_file(self.path / "class_names.txt")
        train = RawSplit(
            read_stl_labels(self.path / "train_y.bin"), images=read_stl_images(self.path / "train_X.bin")
        )
        val = None
        if with_val:
            val = RawSplit(
                read_stl_labels(self.path / "test_y.bin"), images=read_stl_images(self.path / "test_X.bin")
            )
        return RawData(train=train, val=val, classes=classes)
