"""Splits: what a loader reads (:class:`RawData`), how a validation split is held out (stratified and seeded),
the normalisation statistics of a training split, and what ``load_dataset`` hands back (:class:`DatasetSplits`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worker.data.images import CHUNK_ELEMENTS, ImageSet
from worker.exceptions import DataFormatError

_STATS_SAMPLE = 10_000
_FILE_STATS_SAMPLE = 256


@dataclass(frozen=True)
class DatasetSplits:
    """What :func:`load_dataset` returns: train and validation sets plus what the pipeline needs to know.

    ``mean`` and ``std`` are per channel on the [0, 1] scale, one value per ``in_chans``.
    """

    train: ImageSet
    val: ImageSet
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class RawSplit:
    """One split as read from disk: native-size uint8 images ``[N, C, H, W]`` or image files, plus labels."""

    labels: np.ndarray
    images: torch.Tensor | None = None
    files: list[Path] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if (self.images is None) == (self.files is None):
            raise ValueError("a RawSplit holds either images or files")
        size = len(self.files) if self.files is not None else int(self.images.shape[0])  # type: ignore[union-attr]
        if size != len(self.labels):
            raise DataFormatError(f"{size} images but {len(self.labels)} labels")

    def take(self, indices: np.ndarray) -> RawSplit:
        if self.files is not None:
            return RawSplit(self.labels[indices], files=[self.files[i] for i in indices])
        assert self.images is not None
        return RawSplit(self.labels[indices], images=self.images[torch.as_tensor(indices, dtype=torch.long)])


@dataclass
class RawData:
    """What a loader's ``read`` returns. ``val`` is the official test/val split, or None."""

    train: RawSplit
    val: RawSplit | None
    classes: list[str]


def channel_stats(images: ImageSet, *, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the [0, 1] scale, over a seeded sample of at most 10k images."""
    if len(images) == 0:
        raise DataFormatError("cannot compute statistics of an empty training split")
    limit = _STATS_SAMPLE if images.in_memory else _FILE_STATS_SAMPLE
    if len(images) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
        images = images.subset(pick)
    tensors = images.to_tensors().images
    n, c, h, w = tensors.shape
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    step = max(1, CHUNK_ELEMENTS // (c * h * w))
    for start in range(0, n, step):
        chunk = tensors[start : start + step].to(torch.float64) / 255.0
        total += chunk.sum((0, 2, 3))
        squares += chunk.square().sum((0, 2, 3))
    count = n * h * w
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def stratified_pick(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``(rest, picked)`` with ``len(picked) == count`` and classes in proportion.

    Quotas per class follow the largest-remainder rule, so the total is exact; which items of a class are
    picked is a seeded permutation. Both index arrays come back sorted.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 <= count <= n:
        raise ValueError(f"cannot pick {count} of {n} items")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = counts * (count / max(n, 1))
    alloc = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - alloc), kind="stable")
    alloc[order[: count - int(alloc.sum())]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(inverse == k))[:a] for k, a in enumerate(alloc)]
    chosen = np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[chosen] = False
    return np.flatnonzero(mask), chosen
