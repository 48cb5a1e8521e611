"""What to do with a trial that raised: fail it, or give it back to the queue. Never retry an invalid spec."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydantic import ValidationError

from server.core.db import is_transient
from server.core.tracking import unreachable
from worker.exceptions import PermanentTrialError, TransientTrialError


class Outcome(str, enum.Enum):
    fail = "fail"  # record the failure with its reason; the worker takes the next trial
    requeue = "requeue"  # give the trial back; another attempt (bounded by max_attempts) may succeed


@dataclass(frozen=True)
class RetryPolicy:
    """Classifies exceptions by type. Permanent errors (bad spec, missing data, bad architecture) always fail;
    infrastructure errors (database connection, transient worker errors) requeue while attempts remain."""

    max_attempts: int = 3

    def classify(self, exc: BaseException, attempts: int) -> Outcome:
        if isinstance(exc, (PermanentTrialError, ValidationError, ValueError, TypeError, KeyError)):
            return Outcome.fail
        # is_transient also sees a lost connection wrapped by Optuna (StorageInternalError) during a database restart.
        if isinstance(exc, TransientTrialError) or is_transient(exc) or unreachable(exc):
            return Outcome.requeue if attempts < self.max_attempts else Outcome.fail
        # Runtime errors (CUDA out of memory included) are the trial's own failure: recorded, not retried.
        return Outcome.fail


def describe(exc: BaseException) -> str:
    """A one-line reason for the store and MLflow; CUDA OOM is named as such."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if "out of memory" in str(exc).lower() or name == "OutOfMemoryError":
        name = "CUDA out of memory"
    return f"{name}: {text}"[:2000] if text else name
