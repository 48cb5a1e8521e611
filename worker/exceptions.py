"""Errors raised while running a trial. The retry policy keys on these classes, never on messages."""

from __future__ import annotations

from server.core.models import StopReason


class WorkerError(Exception):
    """Base class of every worker error."""


class PermanentTrialError(WorkerError):
    """The trial can never succeed as specified (missing data, invalid architecture): never retried."""


class DataNotFoundError(PermanentTrialError, FileNotFoundError):
    """A dataset's files are not where they should be. The message names the path and how to get the files."""


class DataFormatError(PermanentTrialError, ValueError):
    """A dataset's files exist but do not have the expected format."""


class TransientTrialError(WorkerError):
    """A failure that may not repeat (a lost lease, a database hiccup): the trial goes back to the queue."""


class TrialStopped(WorkerError):
    """Training stopped at an epoch boundary on request (cancel, shutdown, lost lease); not a failure."""

    def __init__(self, reason: StopReason | str) -> None:
        super().__init__(reason.value if isinstance(reason, StopReason) else reason)
        self.reason = reason


class TrialPruned(WorkerError):
    """The pruner stopped the trial at an epoch boundary, or its loss went NaN."""

    def __init__(self, epoch: int, reason: str = "pruned") -> None:
        super().__init__(f"{reason} at epoch {epoch}")
        self.epoch = epoch
        self.reason = reason
