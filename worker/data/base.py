"""The base class every dataset loader derives from.

A loader reads its files into a :class:`RawData` (native-size images or file paths, labels, class names);
:class:`DatasetLoader` does everything shared: option checks, finding (or downloading) the files, the validation
split, caps, channel conversion, resizing and normalisation statistics. So a new dataset is one small module
with a ``read`` method. Image sets live in ``images``, splits and statistics in ``splits``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from worker.data.images import FileImageSet, ImageSet, TensorImageSet, convert_channels, resize_images
from worker.data.splits import DatasetSplits, RawData, RawSplit, channel_stats, stratified_pick
from worker.exceptions import DataFormatError, DataNotFoundError

DEFAULT_VAL_FRACTION = 0.2
# Options every dataset accepts, with their defaults.
COMMON_OPTIONS: dict[str, Any] = {"max_train": None, "max_val": None}


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

    def load(
        self, val_fraction: float | None, normalization: tuple[Sequence[float], Sequence[float]] | None = None
    ) -> DatasetSplits:
        """Train and validation splits; ``val_fraction=0`` keeps every training image and an empty validation set.

        ``normalization`` is the per-channel ``(mean, std)`` to use (see ``DatasetSpec.normalization``); None
        uses the dataset's own: its published statistics, else those of the training split.
        """
        if val_fraction is not None and not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction=}")
        if normalization is not None:
            mean_given, std_given = (tuple(float(v) for v in x) for x in normalization)
            if len(mean_given) != self.in_chans or len(std_given) != self.in_chans:
                raise ValueError(f"normalization needs {self.in_chans} mean and std values, got {normalization}")
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
        if val_fraction == 0:
            val = train.take(np.empty(0, dtype=np.int64))
        elif val_fraction is not None or val is None:
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
        mean, std = self._stats(train_set) if normalization is None else (mean_given, std_given)
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
