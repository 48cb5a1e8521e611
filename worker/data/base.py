"""Image sets, dataset splits and the base class every dataset loader derives from.

A loader reads its files into a :class:`RawData` (native-size images or file paths, labels, class names);
the base class does everything shared: option checks, split selection, caps, channel conversion, resizing
and normalisation statistics. So a new dataset is one small module with a ``read`` method.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from worker.exceptions import DataFormatError, DataNotFoundError

# ITU-R BT.601 luma, the weights PIL's ``convert("L")`` uses.
LUMA = (0.299, 0.587, 0.114)
DEFAULT_VAL_FRACTION = 0.2
# Options every dataset accepts, with their defaults.
COMMON_OPTIONS: dict[str, Any] = {"max_train": None, "max_val": None}
# Images per chunk when resizing or computing statistics: bounds the float32 copies to ~256 MiB.
_CHUNK_ELEMENTS = 1 << 26
_STATS_SAMPLE = 10_000
_FILE_STATS_SAMPLE = 256


# -- image sets ---------------------------------------------------------------------------------------------


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


# -- image helpers ------------------------------------------------------------------------------------------


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
    step = max(1, _CHUNK_ELEMENTS // (c * max(h * w, img_size * img_size)))
    for start in range(0, n, step):
        chunk = images[start : start + step].float()
        chunk = F.interpolate(
            chunk, size=(img_size, img_size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + step] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


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
    step = max(1, _CHUNK_ELEMENTS // (c * h * w))
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


# -- loaders ------------------------------------------------------------------------------------------------


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


class DatasetLoader(abc.ABC):
    """Base class of every dataset: subclasses set the class attributes and implement :meth:`read`.

    Attributes:
        name: the registry name.
        folder: the sub-folder of the data root holding the files (may be overridden per instance).
        official_val: whether the dataset has an official test/val split used when ``val_fraction`` is None.
        native_chans: channels of the files (1 or 3).
        mean, std: published per-channel statistics of the native channels; None computes them from train.
        options: dataset-specific options and their defaults (``max_train``/``max_val`` are always accepted).
        source: how to get the files, quoted in :class:`DataNotFoundError` messages.
    """

    name: ClassVar[str]
    folder: ClassVar[str] = ""
    official_val: bool = False
    native_chans: ClassVar[int] = 3
    mean: ClassVar[tuple[float, ...] | None] = None
    std: ClassVar[tuple[float, ...] | None] = None
    options: ClassVar[dict[str, Any]] = {}
    source: ClassVar[str] = ""

    def __init__(
        self, root: Path, *, img_size: int, in_chans: int, seed: int, download: bool, options: dict[str, Any]
    ) -> None:
        if img_size < 1:
            raise ValueError(f"img_size must be positive, got {img_size=}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be positive, got {in_chans=}")
        self.check_channels(in_chans)
        allowed = {**COMMON_OPTIONS, **self.options}
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for dataset {self.name!r}; valid: {', '.join(sorted(allowed))}"
            )
        self.root = Path(root)
        self.img_size = img_size
        self.in_chans = in_chans
        self.seed = seed
        self.download = download
        self.opts: dict[str, Any] = {**allowed, **options}
        for key in ("max_train", "max_val"):
            value = self.opts[key]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"option {key} must be a positive integer, got {key}={value!r}")

    # -- what subclasses provide ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """Where this dataset's files live."""
        return self.root / self.folder

    @abc.abstractmethod
    def read(self, *, with_val: bool) -> RawData:
        """Read the files. ``with_val`` asks for the official val split (skip decoding it otherwise)."""

    def fetch(self) -> None:
        """Download the files into :attr:`root` (``download=True``); default: this dataset cannot."""
        raise DataNotFoundError(self.missing_message(self.path) + " (no automatic download for this dataset)")

    def required(self) -> list[Path]:
        """Files or folders that must exist before :meth:`read` (checked first, so errors name them)."""
        return [self.path]

    # -- shared machinery ----------------------------------------------------------------------------

    def missing_message(self, path: Path) -> str:
        return (
            f"dataset {self.name!r}: expected {path}, which does not exist. {self.source} "
            "With network access, set VITSWEEP_DOWNLOAD=1 (download=True) to download it."
        )

    def check_channels(self, in_chans: int) -> None:
        """Fail before reading anything if the files cannot become ``in_chans`` channels."""
        if self.native_chans == 3 and in_chans not in (1, 3):
            raise ValueError(
                f"dataset {self.name!r} is RGB: in_chans must be 1 (luminance) or 3, got {in_chans=}"
            )

    def missing(self) -> list[Path]:
        """The :meth:`required` paths that do not exist."""
        return [p for p in self.required() if not p.exists()]

    def ensure_files(self) -> None:
        missing = self.missing()
        if missing and self.download:
            try:
                self.fetch()
            except DataNotFoundError:
                raise
            except Exception as exc:  # network, checksum and archive errors all mean "no data"
                raise DataNotFoundError(f"{self.missing_message(missing[0])} Download failed: {exc}") from exc
            missing = self.missing()
        if missing:
            raise DataNotFoundError(self.missing_message(missing[0]))

    def load(self, val_fraction: float | None) -> DatasetSplits:
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction=}")
        self.ensure_files()
        raw = self.read(with_val=val_fraction is None and self.official_val)
        if not raw.classes:
            raise DataFormatError(f"dataset {self.name!r} at {self.path} has no classes")
        train, val = raw.train, raw.val
        for split in (train, val):
            if (
                split is not None
                and len(split.labels)
                and not 0 <= split.labels.min() <= split.labels.max() < len(raw.classes)
            ):
                raise DataFormatError(
                    f"dataset {self.name!r} at {self.path}: labels span {split.labels.min()}..{split.labels.max()}, "
                    f"expected 0..{len(raw.classes) - 1}"
                )
        if val_fraction is not None or val is None:
            fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
            count = min(len(train.labels) - 1, max(1, round(fraction * len(train.labels))))
            if count < 1:
                raise DataFormatError(
                    f"dataset {self.name!r} has too few images ({len(train.labels)}) to split"
                )
            rest, held = stratified_pick(train.labels, count, self.seed)
            train, val = train.take(rest), train.take(held)
        train = self._cap(train, self.opts["max_train"])
        val = self._cap(val, self.opts["max_val"])
        train_set, val_set = self._materialise(train), self._materialise(val)
        mean, std = self._stats(train_set)
        return DatasetSplits(
            train=train_set, val=val_set, classes=list(raw.classes), mean=mean, std=std, name=self.name
        )

    def _cap(self, split: RawSplit, limit: int | None) -> RawSplit:
        if limit is None or limit >= len(split.labels):
            return split
        return split.take(stratified_pick(split.labels, limit, self.seed + 1)[1])

    def _materialise(self, split: RawSplit) -> ImageSet:
        if split.files is not None:
            return FileImageSet(split.files, split.labels, img_size=self.img_size, in_chans=self.in_chans)
        assert split.images is not None
        images = split.images
        if images.shape[1] > self.in_chans:  # reduce channels first: less to resize
            images = resize_images(convert_channels(images, self.in_chans), self.img_size)
        else:
            images = convert_channels(resize_images(images, self.img_size), self.in_chans)
        return TensorImageSet(images.contiguous(), split.labels)

    def _stats(self, train: ImageSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.mean is not None and self.std is not None:
            if self.in_chans == self.native_chans:
                return tuple(self.mean), tuple(self.std)
            if self.native_chans == 1:  # grayscale repeated: the same statistics per channel
                return tuple(self.mean) * self.in_chans, tuple(self.std) * self.in_chans
        return channel_stats(train, seed=self.seed)


def read_classes_file(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
