"""Errors of the server package. Only the API layer turns them into HTTP responses."""

from __future__ import annotations


class VitsweepError(Exception):
    """Base class of the server package's errors."""


class NotFoundError(VitsweepError):
    def __init__(self, kind: str, ident: int | str) -> None:
        super().__init__(f"{kind} {ident} not found")
        self.kind = kind
        self.ident = ident


class ConflictError(VitsweepError):
    """The request is valid but the resource's state forbids it (e.g. cancelling a finished sweep)."""


class BackendError(VitsweepError):
    """Optuna or MLflow failed while a sweep was being created; nothing was kept."""
