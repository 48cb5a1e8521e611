"""Errors of the shared layer. The API maps each to one HTTP status, in one place (``server/main.py``)."""

from __future__ import annotations


class VitsweepError(Exception):
    """Base class of the shared layer's errors."""


class NotFoundError(VitsweepError):
    """No such sweep (HTTP 404)."""

    def __init__(self, kind: str, ident: int | str) -> None:
        super().__init__(f"{kind} {ident} not found")
        self.kind = kind
        self.ident = ident


class ConflictError(VitsweepError):
    """The request is valid but the resource's state forbids it, e.g. cancelling a finished sweep (HTTP 409)."""


class BackendError(VitsweepError):
    """Optuna or MLflow failed while a sweep was being created; nothing was kept (HTTP 503)."""


class BusyError(VitsweepError):
    """The server cannot take this request now (its spec checks are all busy); nothing was stored (HTTP 503 with
    Retry-After, in seconds)."""

    def __init__(self, msg: str, retry_after: int = 5) -> None:
        super().__init__(msg)
        self.retry_after = retry_after


class SpecError(VitsweepError, ValueError):
    """A spec that parsed but cannot run (HTTP 422); ``loc`` is the path of the bad field."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


class PathEscapeError(VitsweepError, ValueError):
    """A path from a spec would leave the data directory."""
