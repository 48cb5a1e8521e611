"""Any class-per-folder tree under the data directory, file-backed (torchvision ``ImageFolder`` layout)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from server.core.datapaths import confine
from worker.data._registry import register_dataset
from worker.data.base import DatasetLoader
from worker.data.splits import RawData, RawSplit
from worker.exceptions import DataFormatError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
VAL_FOLDERS = ("val", "valid", "validation", "test")


def scan(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files under ``folder/<class>/`` (recursively), their labels, and the sorted class names.

    With ``classes`` given (a validation tree), labels follow that list and unknown class folders are an error.
    """
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    is_train = classes is None
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataFormatError(
                f"{folder} has class folders not in the training tree: {', '.join(unknown)}"
            )
    files: list[Path] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(classes):
        if name not in found:
            continue
        batch = sorted(
            Path(dirpath) / f
            for dirpath, _, names in os.walk(folder / name, followlinks=True)
            for f in names
            if f.lower().endswith(EXTENSIONS) and not f.startswith(".")
        )
        if not batch:
            empty.append(name)
        files += batch
        labels += [label] * len(batch)
    if not files:
        raise DataFormatError(f"no images ({', '.join(EXTENSIONS)}) in class folders under {folder}")
    if empty and is_train:
        raise DataFormatError(f"class folders without images under {folder}: {', '.join(empty)}")
    return files, np.asarray(labels, dtype=np.int64), classes


@register_dataset
class ImageFolder(DatasetLoader):
    """``<data dir>/<path>/<class>/**/*.jpg``; or ``<path>/train/<class>`` with ``<path>/val`` (or ``valid``,
    ``validation``, ``test``) as the official validation split. Statistics come from the training split.
    """

    name = "imagefolder"
    options = {"path": None}
    source = "Put one folder of images per class under it (the torchvision ImageFolder layout)."

    def __init__(self, root: Path, **kwargs: object) -> None:
        super().__init__(root, **kwargs)  # type: ignore[arg-type]
        path = self.opts["path"]
        if path is None:
            raise ValueError("imagefolder needs option path, a folder relative to the data directory")
        self.base = confine(self.root, path, "imagefolder option path")
        self.val_dir = next((self.base / v for v in VAL_FOLDERS if (self.base / v).is_dir()), None)
        self.official_val = (self.base / "train").is_dir() and self.val_dir is not None

    @property
    def path(self) -> Path:
        return self.base

    def read(self, *, with_val: bool) -> RawData:
        train_dir = self.base / "train" if self.official_val else self.base
        files, labels, classes = scan(train_dir)
        val = None
        if with_val and self.val_dir is not None:
            val_files, val_labels, _ = scan(self.val_dir, classes)
            val = RawSplit(val_labels, files=val_files)
        return RawData(train=RawSplit(labels, files=files), val=val, classes=classes)
