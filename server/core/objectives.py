"""What a sweep optimises, and the one rule for "better": by the objective's direction, NaN never best.

Per-epoch metrics are what a trial reports every epoch (the first objective is one of them: Optuna prunes on
it and the store keeps its best as the trial's ``value``); trial figures are known once a trial has ended and
may be further objectives of a multi-objective search.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeGuard, TypeVar, get_args

Direction = Literal["maximize", "minimize"]
# The metrics a trial reports each epoch; the (first) objective must be one of them.
EpochMetric = Literal["val_acc", "val_loss", "train_acc", "train_loss"]
# Figures known only once a trial has ended: further objectives of a multi-objective search.
TrialFigure = Literal[
    "param_count", "flops_per_image", "peak_memory_bytes", "seconds_per_epoch", "median_images_per_second", "svc_acc"
]
Objective = Literal[EpochMetric, TrialFigure]
EPOCH_METRICS: tuple[str, ...] = get_args(EpochMetric)
# Objective names a spec may still use for the one it now has (``params`` was the parameter count's name, and
# ``images_per_second`` the median throughput's, which is a per-epoch metric's name).
OBJECTIVE_ALIASES = {"params": "param_count", "images_per_second": "median_images_per_second"}
K = TypeVar("K", bound=Hashable)


def stored_figure(metrics: Mapping[str, Any], name: str) -> Any:
    """A trial figure from a stored trial's metrics, also from trials stored under its old name."""
    if name in metrics:
        return metrics[name]
    old = next((k for k, v in OBJECTIVE_ALIASES.items() if v == name), None)
    return metrics.get(old) if old is not None else None


def finite(value: Any) -> TypeGuard[float]:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sign(direction: Direction) -> float:
    """+1 for maximize, -1 for minimize: ``sign * value`` is larger the better it is."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    return 1.0 if direction == "maximize" else -1.0


def better(candidate: float, incumbent: float | None, direction: Direction) -> bool:
    """Whether ``candidate`` beats ``incumbent`` (None: nothing yet); a non-finite candidate never does."""
    if not finite(candidate):
        return False
    return incumbent is None or sign(direction) * candidate > sign(direction) * incumbent


def best(values: Iterable[Any], direction: Direction) -> float | None:
    """The best finite value of ``values`` by ``direction``; None if there is none."""
    out: float | None = None
    for value in values:
        if better(value, out, direction):
            out = float(value)
    return out


def rank_key(value: float | None, direction: Direction) -> float:
    """A sort key putting the best first (ascending), values missing or not finite last."""
    return -sign(direction) * value if value is not None and finite(value) else math.inf


def pareto_front(points: Mapping[K, Sequence[float]], directions: Sequence[Direction]) -> list[K]:
    """The keys of the points no other point beats on every objective (in ``points``' order)."""
    signs = [sign(d) for d in directions]
    scaled = {k: [s * float(v) for s, v in zip(signs, values, strict=True)] for k, values in points.items()}

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    return [k for k, p in scaled.items() if not any(dominates(q, p) for q in scaled.values())]


def objective_values(
    objectives: Sequence[str], directions: Sequence[Direction], history: Sequence[Mapping[str, float]],
    summary: Mapping[str, Any],
) -> list[float] | None:
    """Every objective's value of a trial that ended, or None if one is missing.

    Per-epoch metrics count at their best epoch (like the single objective); end-of-trial figures (params,
    seconds_per_epoch, ...) as the trial's ``summary`` has them.
    """
    out: list[float] = []
    for name, direction in zip(objectives, directions, strict=True):
        if name in EPOCH_METRICS:
            value = best((h.get(name) for h in history), direction)
        else:
            raw = summary.get(name)
            value = float(raw) if finite(raw) else None
        if value is None:
            return None
        out.append(value)
    return out
