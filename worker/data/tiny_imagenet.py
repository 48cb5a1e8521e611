"""Tiny ImageNet (``tiny-imagenet-200``): 200 classes of 64x64 JPEGs, 500 training and 50 val images each."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from worker.data._registry import register_dataset
from worker.data.base import DatasetLoader, read_classes_file
from worker.data.splits import RawData, RawSplit
from worker.exceptions import DataFormatError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
SIDE = 64


def decode_all(files: list[Path], *, gray: bool, side: int = SIDE) -> torch.Tensor:
    """Decode small images into one uint8 ``[N, C, side, side]`` tensor with a thread pool (PIL frees the GIL)."""
    chans = 1 if gray else 3
    out = np.empty((len(files), side, side, chans), dtype=np.uint8)

    def one(i: int) -> None:
        try:
            with Image.open(files[i]) as file:
                img = file.convert("L" if gray else "RGB")
                if img.size != (side, side):
                    img = img.resize((side, side), Image.Resampling.BILINEAR)
                out[i] = np.asarray(img).reshape(side, side, chans)
        except OSError as exc:
            raise DataFormatError(f"cannot decode image {files[i]}: {exc}") from exc

    with ThreadPoolExecutor(min(16, (os.cpu_count() or 1) * 2)) as pool:
        list(pool.map(one, range(len(files))))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@register_dataset
class TinyImageNet(DatasetLoader):
    """``train/<wnid>/images/*.JPEG`` for training, ``val/images`` labelled by ``val/val_annotations.txt``.

    Class order is ``wnids.txt``; class names are the first synonym in ``words.txt``. Decoded into memory at
    64x64 when ``img_size <= 64`` (1.2 GB for the full set); larger sizes stay file-backed unless the
    ``in_memory`` option says otherwise.
    """

    name = "tiny_imagenet"
    folder = "tiny-imagenet-200"
    official_val = True
    mean = (0.4802, 0.4481, 0.3975)
    std = (0.2770, 0.2691, 0.2821)
    options = {"in_memory": None}
    source = (
        f"Get {URL} and unzip it into the data directory (it has no torchvision class; download=True fetches "
        "that archive)."
    )

    def required(self) -> list[Path]:
        return [self.path / "wnids.txt", self.path / "train", self.path / "val" / "val_annotations.txt"]

    def fetch(self) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(URL, download_root=str(self.root), md5=MD5)

    def read(self, *, with_val: bool) -> RawData:
        wnids = read_classes_file(self.path / "wnids.txt")
        index = {w: i for i, w in enumerate(wnids)}
        classes = self._class_names(wnids)
        files, labels = [], []
        for wnid in wnids:
            found = sorted((self.path / "train" / wnid / "images").glob("*.JPEG"))
            if not found:
                raise DataFormatError(f"no training images in {self.path / 'train' / wnid / 'images'}")
            files += found
            labels += [index[wnid]] * len(found)
        train = self._split(files, labels)
        val = None
        if with_val:
            val_files, val_labels = [], []
            annotations = self.path / "val" / "val_annotations.txt"
            for lineno, line in enumerate(annotations.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) < 2 or parts[1] not in index:
                    raise DataFormatError(
                        f"{annotations}:{lineno}: expected '<file>\\t<wnid>...', got {line!r}"
                    )
                val_files.append(self.path / "val" / "images" / parts[0])
                val_labels.append(index[parts[1]])
            val = self._split(val_files, val_labels)
        return RawData(train=train, val=val, classes=classes)

    def _class_names(self, wnids: list[str]) -> list[str]:
        words = self.path / "words.txt"
        names: dict[str, str] = {}
        if words.exists():
            for line in words.read_text().splitlines():
                wnid, _, text = line.partition("\t")
                names[wnid.strip()] = text.split(",")[0].strip()
        classes = [names.get(w) or w for w in wnids]
        # a few synonyms repeat across wnids; keep names unique
        return [f"{c} ({w})" if classes.count(c) > 1 else c for c, w in zip(classes, wnids, strict=True)]

    def _split(self, files: list[Path], labels: list[int]) -> RawSplit:
        in_memory = self.opts["in_memory"]
        if in_memory is None:
            in_memory = self.img_size <= SIDE
        if not in_memory:
            return RawSplit(np.asarray(labels), files=files)
        missing = next((f for f in files if not f.exists()), None)
        if missing is not None:
            raise DataFormatError(f"{missing} is listed but missing")
        return RawSplit(np.asarray(labels), images=decode_all(files, gray=self.in_chans == 1))
