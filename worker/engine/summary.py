"""A trial's summary from its per-epoch history: the one place the figures a trial ends with are computed,
whether it ran to the end (``fit``) or was stopped early (a pruned trial keeps what it had)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence


def history_summary(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Best and final epochs' figures, mean seconds per epoch and median training throughput.

    Each name says what it is, so none is a per-epoch metric's name with another meaning: the median of the
    epochs' ``images_per_second`` is ``median_images_per_second``.

    ``best_val_acc`` and ``best_epoch`` come from the first epoch with the highest finite validation accuracy
    (epochs are numbered by their ``"epoch"`` entry, or from 1); empty when no epoch has one.
    """
    scored = [(i, h) for i, h in enumerate(history) if _finite(h.get("val_acc"))]
    if not scored:
        return {}
    best_index, best = max(scored, key=lambda ih: (ih[1]["val_acc"], -ih[0]))
    last = history[-1]
    seconds = [h["epoch_seconds"] for h in history if _finite(h.get("epoch_seconds"))]
    rates = [h["images_per_second"] for h in history if _finite(h.get("images_per_second"))]
    return {
        "best_val_acc": float(best["val_acc"]),
        "best_epoch": float(best.get("epoch", best_index + 1)),
        "final_train_acc": float(last.get("train_acc", math.nan)),
        "final_val_acc": float(last.get("val_acc", math.nan)),
        "final_val_loss": float(last.get("val_loss", math.nan)),
        "seconds_per_epoch": statistics.fmean(seconds) if seconds else math.nan,
        "median_images_per_second": statistics.median(rates) if rates else math.nan,
    }


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
