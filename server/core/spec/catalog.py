"""What a spec may name that the worker owns: datasets (with their options) and augmentation presets.

The shared layer does not import the worker; the process that validates a spec (the API, the CLI, a test)
passes the worker's catalog (``worker.catalog.WORKER_CATALOG``) to :func:`server.core.spec.validate_plan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class Catalog(Protocol):
    """The names a spec can resolve, as a worker will resolve them."""

    def datasets(self) -> Sequence[str]:
        """Registered dataset names, sorted."""

    def dataset_options(self, name: str) -> Mapping[str, Any]:
        """The options dataset ``name`` takes, with their defaults (common ones included)."""

    def augments(self) -> Sequence[str]:
        """Registered augmentation preset names, sorted."""

    def missing_data(self, name: str, root: Path, options: Mapping[str, Any], *, download: bool) -> str | None:
        """What of dataset ``name`` (with ``options``) is absent under the data directory ``root``, naming the
        file or folder and how to get it; None when its files are there (or ``download`` will fetch them)."""

    def augment_recipes(self, img_size: int) -> Mapping[str, Mapping[str, Any]]:
        """Every preset's contents at ``img_size``: ``{ops: [{KorniaClass: {keywords}}, ...], random_apply, ...}``."""
