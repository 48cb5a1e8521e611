"""The dataset registry: loaders register by name; specs resolve names through :func:`load_dataset`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from worker.data.base import DatasetLoader
from worker.data.splits import DatasetSplits

_LOADERS: dict[str, type[DatasetLoader]] = {}

L = TypeVar("L", bound=type[DatasetLoader])


def register_dataset(cls: L) -> L:
    """Class decorator: make a :class:`DatasetLoader` loadable by its ``name``."""
    name = cls.name
    if name in _LOADERS and _LOADERS[name] is not cls:
        raise ValueError(f"dataset {name!r} is already registered by {_LOADERS[name].__qualname__}")
    _LOADERS[name] = cls
    return cls


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_LOADERS)


def get_loader(name: str) -> type[DatasetLoader]:
    try:
        return _LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(list_datasets())}") from None


def load_dataset(
    name: str,
    *,
    root: Path,
    img_size: int,
    in_chans: int = 3,
    val_fraction: float | None = None,
    seed: int = 0,
    download: bool = False,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    **options: Any,
) -> DatasetSplits:
    """Load dataset ``name`` from its sub-folder of ``root`` as train/val splits at ``img_size``.

    Args:
        name: a name from :func:`list_datasets`.
        root: the data directory (``VITSWEEP_DATA_DIR``).
        img_size: images come out ``img_size x img_size`` (antialiased bilinear).
        in_chans: channels of the output; grayscale is repeated, RGB becomes luminance for 1.
        val_fraction: None uses the official test/val split (a stratified 20% hold-out where there is none);
            a float holds out that stratified, seeded fraction of the training split instead; 0 trains on all of
            it and leaves the validation set empty.
        seed: seeds hold-outs, caps and generated data splits.
        download: fetch missing files where the dataset can (needs a network).
        normalization: per-channel ``(mean, std)`` on the [0, 1] scale for the splits to carry; None: the
            dataset's own statistics.
        **options: dataset-specific options; every dataset takes ``max_train`` and ``max_val`` caps.

    Raises:
        DataNotFoundError: the files are missing; the message names the path and how to get them.
        DataFormatError: the files exist but cannot be read.
        ValueError: an unknown name or option, or an invalid value.
    """
    loader = get_loader(name)(
        Path(root), img_size=img_size, in_chans=in_chans, seed=seed, download=download, options=options
    )
    return loader.load(val_fraction, normalization)
