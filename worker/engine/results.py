"""What ``fit`` hands back: one report per epoch while training, one result at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch (1-based): its metrics and the resumable checkpoint written for it, if any.

    ``metrics``: ``train_loss`` and ``train_acc`` (running over the epoch, augmented inputs), ``val_loss`` and
    ``val_acc`` (a full validation pass in eval mode; the loss without label smoothing), ``lr`` (at the end of
    the epoch), ``images_per_second`` (training steps only), ``epoch_seconds`` (training and validation) and
    ``inputs_seen`` (training inputs since the start of the run, across resumes).
    """

    epoch: int
    metrics: dict[str, float]
    checkpoint: Path | None = None


@dataclass
class FitResult:
    """A finished training run.

    ``history`` holds one dict per epoch (metrics plus ``"epoch"``); ``summary`` the scalar figures the store
    keeps per trial (parameters, FLOPs, memory, median throughput, probe accuracy); ``artifacts`` the plot
    files; ``model`` a CPU copy of the trained module with its best epoch's weights (``best.pt``), or None without one.
    """

    history: list[dict[str, float]]
    best_val_acc: float
    best_epoch: int
    final: dict[str, float]
    summary: dict[str, float]
    checkpoints: dict[str, Path] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    model: nn.Module | None = None
