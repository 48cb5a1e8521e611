"""A ``matrix``: the trials of a grid, written as GitHub Actions writes a job matrix.

- Paths mapped to lists are the product: every combination is one point.
- ``exclude``: a list of partial points; a combination that matches every pair of one of them is removed.
- ``include``: a list of points. As in GitHub Actions, each is merged into every combination whose original
  values it does not contradict (it may overwrite values an earlier ``include`` added, never the product's);
  one that fits no combination becomes a point of its own. A matrix of ``include`` alone is exactly its points.

A point's keys are dotted paths (``model.arch.depth``) or whole blocks (``model``, ``dataset.augment``): the
value is written at that path, so ``model: {name: perceiver, arch: {...}}`` replaces the model block.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from server.core.spec.limits import MAX_LIST, MAX_TRIALS, check_value

INCLUDE = "include"
EXCLUDE = "exclude"
MAX_AXES = 16
MAX_POINT_KEYS = 32


def axes(matrix: dict[str, Any]) -> dict[str, list[Any]]:
    """The product's paths and their values (``include`` and ``exclude`` left out)."""
    return {p: v for p, v in matrix.items() if p not in (INCLUDE, EXCLUDE)}


def check_matrix(matrix: dict[str, Any]) -> dict[str, Any]:
    """Shape and size of a matrix, counted before any point is made.

    Raises:
        ValueError: naming the entry at fault.
    """
    if not matrix:
        raise ValueError("the matrix is empty; give at least one path with a list of values, or an include list")
    product = axes(matrix)
    if len(product) > MAX_AXES:
        raise ValueError(f"the matrix has {len(product)} paths, at most {MAX_AXES}")
    for path, values in product.items():
        if not isinstance(values, list):
            raise ValueError(f"matrix entry {path!r} must be a list of values, got {type(values).__name__}")
        if not values:
            raise ValueError(f"matrix entry {path!r} is an empty list; give at least one value")
        if len(values) > MAX_LIST:
            raise ValueError(f"matrix entry {path!r} has {len(values)} values, at most {MAX_LIST}")
        for i, item in enumerate(values):
            check_value(item, f"{path}[{i}]")
    for key in (INCLUDE, EXCLUDE):
        points = matrix.get(key, [])
        if not isinstance(points, list):
            raise ValueError(f"matrix.{key} must be a list of points (mappings of paths to values)")
        if len(points) > MAX_TRIALS:
            raise ValueError(f"matrix.{key} has {len(points)} points, at most {MAX_TRIALS}")
        for i, point in enumerate(points):
            if not isinstance(point, dict) or not point:
                raise ValueError(f"matrix.{key}[{i}] must be a non-empty mapping of paths to values")
            if len(point) > MAX_POINT_KEYS:
                raise ValueError(f"matrix.{key}[{i}] sets {len(point)} paths, at most {MAX_POINT_KEYS}")
            for path, value in point.items():
                check_value(value, f"{key}[{i}].{path}")
    for i, point in enumerate(matrix.get(EXCLUDE, [])):
        unknown = sorted(set(point) - set(product))
        if unknown:
            raise ValueError(
                f"matrix.exclude[{i}] names {', '.join(unknown)}, which the matrix does not vary; "
                f"exclude removes combinations of: {', '.join(product) or 'nothing (the matrix has no lists)'}"
            )
    combos = math.prod(len(v) for v in product.values()) if product else 0
    if combos > MAX_TRIALS:
        sizes = " x ".join(str(len(v)) for v in product.values())
        raise ValueError(f"the matrix has more than {MAX_TRIALS} combinations: {sizes} = {combos}, one trial each")
    if combos + len(matrix.get(INCLUDE, [])) > MAX_TRIALS:
        raise ValueError(f"the matrix can make more than {MAX_TRIALS} trials")
    return matrix


def expand(matrix: dict[str, Any]) -> list[tuple[dict[str, Any], int | None]]:
    """Every point of the matrix, in a stable order, each with the ``include`` entry that made or last extended
    it (None for a plain combination)."""
    product = axes(matrix)
    excludes = matrix.get(EXCLUDE, [])
    combos: list[tuple[dict[str, Any], int | None]] = []
    if product:
        for values in itertools.product(*product.values()):
            point = dict(zip(product, values, strict=True))
            if not any(all(point[p] == v for p, v in ex.items()) for ex in excludes):
                combos.append((point, None))
    extra: list[tuple[dict[str, Any], int | None]] = []
    for i, inc in enumerate(matrix.get(INCLUDE, [])):
        fixed = {p: v for p, v in inc.items() if p in product}
        matched = False
        for n, (point, _) in enumerate(combos):
            if all(point[p] == v for p, v in fixed.items()):
                combos[n] = ({**point, **inc}, i)
                matched = True
        if not matched:
            extra.append((dict(inc), i))
    return combos + extra


def paths(matrix: dict[str, Any]) -> list[str]:
    """Every path any point sets, the product's first."""
    seen = dict.fromkeys(axes(matrix))
    for inc in matrix.get(INCLUDE, []):
        seen.update(dict.fromkeys(inc))
    return list(seen)
