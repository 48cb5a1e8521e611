"""The worker's catalog: the datasets and augmentation presets a spec can name, as this worker resolves them.

The shared layer's spec checks take a :class:`server.core.spec.Catalog`; this is the one processes pass in
(the API at submission, the CLI, tests), so that a spec is refused at the boundary for a name no worker has.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class WorkerCatalog:
    """Reads the registries of :mod:`worker.data` and :mod:`worker.augment` (importing them registers every
    loader and preset)."""

    def datasets(self) -> list[str]:
        from worker.data import list_datasets

        return list_datasets()

    def dataset_options(self, name: str) -> Mapping[str, Any]:
        from worker.data import get_loader
        from worker.data.base import COMMON_OPTIONS

        return {**COMMON_OPTIONS, **get_loader(name).options}

    def augments(self) -> list[str]:
        from worker.augment import list_augments

        return list_augments()

    def missing_data(self, name: str, root: Path, options: Mapping[str, Any], *, download: bool) -> str | None:
        from worker.data import get_loader
        from worker.data.base import DatasetLoader

        cls = get_loader(name)
        try:  # the loader as a trial makes it, reading nothing: its required() files are checked
            loader = cls(root, img_size=32, in_chans=cls.native_chans, seed=0, download=download,
                         options=dict(options))
        except ValueError:  # options a trial would refuse: said by the spec checks, not here
            return None
        missing = loader.missing()
        if not missing or (download and type(loader).fetch is not DatasetLoader.fetch):
            return None
        return loader.missing_message(missing[0])

    def augment_recipes(self, img_size: int) -> Mapping[str, Mapping[str, Any]]:
        from worker.augment import list_augments, preset_recipe

        return {name: preset_recipe(name, img_size=img_size) for name in list_augments()}


WORKER_CATALOG = WorkerCatalog()
