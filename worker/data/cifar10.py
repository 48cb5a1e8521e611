"""CIFAR-10 in its python pickle format (``cifar-10-batches-py``)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.data._registry import register_dataset
from worker.data.base import DatasetLoader
from worker.data.splits import RawData, RawSplit
from worker.exceptions import DataFormatError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

# What a CIFAR batch may reference: numpy arrays, their dtypes and bytes, nothing that runs code.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles of bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data folder is not a place to run code from."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR batch dict with ``str`` keys (the official files are Python 2 pickles with byte keys)."""
    try:
        data = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataFormatError(f"{path} is not a CIFAR pickle batch: {exc}") from exc
    if not isinstance(data, dict):
        raise DataFormatError(f"{path} holds a {type(data).__name__}, expected a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


@register_dataset
class Cifar10(DatasetLoader):
    """Five training batches of 10k 32x32 RGB images and the 10k ``test_batch`` as validation."""

    name = "cifar10"
    folder = "cifar-10-batches-py"
    official_val = True
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    source = (
        "Get cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into the data "
        "directory, or run torchvision.datasets.CIFAR10(root, download=True)."
    )

    def required(self) -> list[Path]:
        return [self.path / f for f in (*TRAIN_BATCHES, "test_batch", "batches.meta")]

    def fetch(self) -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(self.root), train=True, download=True)

    def read(self, *, with_val: bool) -> RawData:
        meta = load_pickle(self.path / "batches.meta")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get("label_names", [])]
        train = self._read_batches(TRAIN_BATCHES)
        val = self._read_batches(("test_batch",)) if with_val else None
        return RawData(train=train, val=val, classes=classes)

    def _read_batches(self, names: tuple[str, ...]) -> RawSplit:
        images, labels = [], []
        for name in names:
            path = self.path / name
            batch = load_pickle(path)
            data = np.asarray(batch.get("data"))
            target = batch.get("labels", batch.get("fine_labels"))
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or target is None:
                raise DataFormatError(
                    f"{path}: expected uint8 data [N, 3072] and labels, got {data.dtype} {data.shape}"
                )
            images.append(data.reshape(-1, 3, 32, 32))  # rows hold the R, G, B planes one after another
            labels.append(np.asarray(target, dtype=np.int64))
        return RawSplit(np.concatenate(labels), images=torch.from_numpy(np.concatenate(images)))
