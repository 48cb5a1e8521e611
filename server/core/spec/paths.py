"""Dotted paths into a spec (``train.lr``, ``model.arch.num_layers``): their syntax, setting them in a spec's
data, and the slug that names a grid point by its values."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from server.core.spec.limits import short_repr

PATH_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
MAX_PATH = 200


def check_path_syntax(path: str) -> None:
    """A searched path is dotted identifiers (``model.arch.num_layers``), at most 200 characters."""
    if len(path) > MAX_PATH or not PATH_PATTERN.match(path):
        raise ValueError(f"path {short_repr(path)} must be dotted identifiers of at most {MAX_PATH} characters, e.g. train.lr")


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``path == "a.b.c"``, creating dicts below ``model.arch`` etc."""
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ValueError(f"path {path!r} goes through {key!r}, which is not a section")
        node = child
    node[keys[-1]] = copy.deepcopy(value)


def leaf(path: str) -> str:
    """The last part of a dotted path: ``model.arch.num_layers`` -> ``num_layers``."""
    return path.rsplit(".", 1)[-1]


def slug(params: dict[str, Any]) -> str:
    """A short readable name for a grid point: ``num_layers-4_lr-0.001``."""
    leaves = [leaf(p) for p in params]
    keys = leaves if len(set(leaves)) == len(leaves) else [p.replace(".", "-") for p in params]
    parts = []
    for key, value in zip(keys, params.values(), strict=True):
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}-{text}")
    return re.sub(r"[^A-Za-z0-9._=,-]+", "", "_".join(parts))[:200]  # commas keep [2, 2] apart from [22]
