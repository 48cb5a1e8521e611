"""Fashion-MNIST idx files, gzipped or not, in torchvision's ``FashionMNIST/raw`` or ``fashion_mnist``."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from worker.data._registry import register_dataset
from worker.data.base import DatasetLoader
from worker.data.splits import RawData, RawSplit
from worker.exceptions import DataFormatError

FOLDERS = ("FashionMNIST/raw", "fashion_mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte idx array (the MNIST format): big-endian header, then the raw bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataFormatError(f"{path} is not an idx file (bad magic number)")
    if data[2] != 0x08:
        raise DataFormatError(
            f"{path}: only unsigned-byte idx files are supported, got type code {data[2]:#x}"
        )
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DataFormatError(f"{path}: header says {dims}, but {len(data) - offset} bytes follow")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


@register_dataset
class FashionMNIST(DatasetLoader):
    """60k 28x28 grayscale training images and the 10k ``t10k`` set as validation."""

    name = "fashion_mnist"
    folder = FOLDERS[0]
    official_val = True
    native_chans = 1
    mean = (0.2860,)
    std = (0.3530,)
    source = (
        "Get the four idx files from https://github.com/zalandoresearch/fashion-mnist (data/fashion) into "
        "<data dir>/fashion_mnist, or run torchvision.datasets.FashionMNIST(root, download=True)."
    )

    @property
    def path(self) -> Path:
        for folder in FOLDERS:
            if (self.root / folder).is_dir():
                return self.root / folder
        return self.root / FOLDERS[0]

    def find(self, key: str) -> Path:
        """The file for ``key``, preferring the uncompressed copy (torchvision keeps both)."""
        plain = self.path / FILES[key]
        return plain if plain.exists() else plain.with_name(plain.name + ".gz")

    def missing(self) -> list[Path]:
        return [self.find(key) for key in FILES if not self.find(key).exists()]

    def fetch(self) -> None:
        from torchvision.datasets import FashionMNIST as TorchFashionMNIST

        TorchFashionMNIST(str(self.root), train=True, download=True)

    def read(self, *, with_val: bool) -> RawData:
        train = self._split("train")
        val = self._split("val") if with_val else None
        return RawData(train=train, val=val, classes=list(CLASSES))

    def _split(self, prefix: str) -> RawSplit:
        images = read_idx(self.find(f"{prefix}_images"))
        labels = read_idx(self.find(f"{prefix}_labels"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataFormatError(
                f"{self.path}: {prefix} images {images.shape} do not match labels {labels.shape}"
            )
        return RawSplit(labels.astype(np.int64), images=torch.from_numpy(images.copy())[:, None])
