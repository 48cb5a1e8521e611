"""Image sets (in memory or file-backed) and the pixel-level helpers every loader shares: decoding, channel
conversion and resizing, all to uint8 ``[C, H, W]`` at the requested size."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from worker.exceptions import DataFormatError

# ITU-R BT.601 luma, the weights PIL's ``convert("L")`` uses.
LUMA = (0.299, 0.587, 0.114)
# Images per chunk when resizing or computing statistics: bounds the float32 copies to ~256 MiB.
CHUNK_ELEMENTS = 1 << 26


class ImageSet(Dataset, abc.ABC):
    """A labelled image set whose items are ``(uint8 tensor [C, H, W], int label)``."""

    labels: torch.Tensor
    in_memory: ClassVar[bool]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @abc.abstractmethod
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...

    @abc.abstractmethod
    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """The items at ``indices``, as a set of the same kind."""

    def to_tensors(self, num_threads: int | None = None) -> TensorImageSet:
        """The set as an in-memory :class:`TensorImageSet` (decodes every file: for small sets)."""
        raise NotImplementedError  # pragma: no cover - both concrete kinds override it


class TensorImageSet(ImageSet):
    """An in-memory set: ``images`` is uint8 ``[N, C, H, W]``, already at the target size."""

    in_memory = True

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | np.ndarray | Sequence[int]) -> None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"need one label per image, got {tuple(labels.shape)} for {images.shape[0]} images"
            )
        self.images = images
        self.labels = labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> TensorImageSet:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return TensorImageSet(self.images[idx], self.labels[idx])

    def to_tensors(self, num_threads: int | None = None) -> TensorImageSet:
        return self

    def __repr__(self) -> str:
        return f"TensorImageSet(n={len(self)}, shape={tuple(self.images.shape[1:])})"


class FileImageSet(ImageSet):
    """A file-backed set for large data: each item is decoded and resized when it is read.

    Holds only paths and labels, so it pickles cheaply into DataLoader worker processes. Images are squashed
    to ``img_size x img_size`` (no crop: nothing of the object is cut away) with PIL's antialiased bilinear.
    """

    in_memory = False

    def __init__(
        self,
        files: Sequence[Path],
        labels: torch.Tensor | np.ndarray | Sequence[int],
        *,
        img_size: int,
        in_chans: int,
    ) -> None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if labels.ndim != 1 or labels.shape[0] != len(files):
            raise ValueError(f"need one label per file, got {tuple(labels.shape)} for {len(files)} files")
        self.files = [Path(f) for f in files]
        self.labels = labels
        self.img_size = img_size
        self.in_chans = in_chans

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load_image(index), int(self.labels[index])

    def load_image(self, index: int) -> torch.Tensor:
        """Decode, convert and resize one file to uint8 ``[in_chans, img_size, img_size]``."""
        return decode_image(self.files[index], img_size=self.img_size, in_chans=self.in_chans)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> FileImageSet:
        idx = np.asarray(indices, dtype=np.int64)
        return FileImageSet(
            [self.files[i] for i in idx],
            self.labels[torch.as_tensor(idx)],
            img_size=self.img_size,
            in_chans=self.in_chans,
        )

    def to_tensors(self, num_threads: int | None = None) -> TensorImageSet:
        images = torch.empty((len(self), self.in_chans, self.img_size, self.img_size), dtype=torch.uint8)

        def one(i: int) -> None:
            images[i] = self.load_image(i)

        with ThreadPoolExecutor(num_threads or min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(one, range(len(self))))
        return TensorImageSet(images, self.labels.clone())

    def __repr__(self) -> str:
        return f"FileImageSet(n={len(self)}, img_size={self.img_size}, in_chans={self.in_chans})"


def decode_image(path: Path, *, img_size: int, in_chans: int) -> torch.Tensor:
    """Decode one image file to uint8 ``[in_chans, img_size, img_size]``."""
    try:
        with Image.open(path) as file:
            # JPEG draft mode decodes at a reduced scale (still >= img_size): a large speed-up for big photos.
            file.draft("L" if in_chans == 1 else None, (img_size, img_size))
            gray = file.mode in ("L", "1", "I", "I;16", "F", "LA", "P") and _is_gray(file)
            img = file.convert("L" if gray or in_chans == 1 else "RGB")
            if img.size != (img_size, img_size):
                img = img.resize((img_size, img_size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"cannot decode image {path}: {exc}") from exc
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return convert_channels(tensor[None], in_chans)[0]


def _is_gray(img: Image.Image) -> bool:
    if img.mode != "P":
        return True
    palette = img.getpalette() or []
    rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def convert_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Grayscale is repeated to ``in_chans``; RGB becomes luminance when ``in_chans == 1``."""
    chans = images.shape[1]
    if chans == in_chans:
        return images
    if chans == 1:
        return images.expand(-1, in_chans, -1, -1).contiguous()
    if chans == 3 and in_chans == 1:
        weights = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(
        f"cannot convert {chans}-channel images to {in_chans} channels; use in_chans=1 or {chans}"
    )


def resize_images(images: torch.Tensor, img_size: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 ``[N, C, H, W]`` to ``img_size``, in bounded-memory chunks."""
    n, c, h, w = images.shape
    if (h, w) == (img_size, img_size):
        return images
    out = torch.empty((n, c, img_size, img_size), dtype=torch.uint8)
    step = max(1, CHUNK_ELEMENTS // (c * max(h * w, img_size * img_size)))
    for start in range(0, n, step):
        chunk = images[start : start + step].float()
        chunk = F.interpolate(
            chunk, size=(img_size, img_size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + step] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out
