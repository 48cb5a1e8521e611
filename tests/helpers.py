"""Small specs for tests: quick to validate and, where trained, quick to train."""

from __future__ import annotations

import copy
from typing import Any

QUICK: dict[str, Any] = {
    "name": "quick",
    "dataset": {"name": "synthetic", "img_size": 8, "options": {"num_samples": 64, "num_classes": 4}},
    "model": {"name": "cnn"},
    "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "svc_probe": False, "plots": False},
    "search": {"sampler": "random", "n_trials": 3, "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
}


def quick_spec(**changes: Any) -> dict[str, Any]:
    """QUICK with top-level sections replaced or updated: quick_spec(search=None, matrix={...})."""
    spec = copy.deepcopy(QUICK)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        elif isinstance(value, dict) and isinstance(spec.get(key), dict) and key not in ("matrix",):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec
