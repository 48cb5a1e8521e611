"""The worker's catalog: the datasets and augmentation presets a spec can name, as this worker resolves them.

The shared layer's spec checks take a :class:`server.core.spec.Catalog`; this is the one processes pass in
(the API at submission, the CLI, tests), so that a spec is refused at the boundary for a name no worker has.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    def augment_recipes(self, img_size: int) -> Mapping[str, Mapping[str, Any]]:
        from worker.augment import list_augments, preset_recipe

        return {name: preset_recipe(name, img_size=img_size) for name in list_augments()}


WORKER_CATALOG = WorkerCatalog()
