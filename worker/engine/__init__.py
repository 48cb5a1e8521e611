"""The training engine: ``fit`` trains one trial's model on its data as its spec says.

``fit`` reports each epoch through a callback (Optuna and MLflow live with the caller), writes resumable
checkpoints, and ends with a summary (parameters, FLOPs, memory, throughput, an SVC probe) and plots.
"""

from __future__ import annotations

from .checkpoint import load_checkpoint
from .results import EpochReport, FitResult
from .trainer import evaluate, fit

__all__ = ["EpochReport", "FitResult", "evaluate", "fit", "load_checkpoint"]
