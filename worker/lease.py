"""Keeping a claimed trial's lease alive in the background, from the claim to the trial's last write."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from server.core import queue
from server.core.config import Settings
from server.core.models import StopReason

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews a claimed trial's lease every ``heartbeat_seconds`` while the trial runs.

    Epoch callbacks renew it too, but the lease must also outlive what comes before the first epoch (the Optuna
    trial, the MLflow run, loading data) and after the last (checkpoint uploads, the summary): on a slow
    store or a busy machine those alone can take longer than a short lease, and another worker would
    reclaim a trial that is still running. ``stop_reason`` is what the store last said (lost lease, cancel).
    """

    def __init__(self, sessions: sessionmaker[Session], claim: queue.Claim, worker_id: str, settings: Settings) -> None:
        self.sessions, self.claim, self.worker_id, self.settings = sessions, claim, worker_id, settings
        self.stop_reason: StopReason | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="heartbeat")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _loop(self) -> None:
        while not self._done.wait(self.settings.heartbeat_seconds):
            try:
                beat = queue.heartbeat(self.sessions, self.claim.row_id, self.worker_id, self.settings.lease_seconds)
            except Exception:  # a database hiccup: the next beat (or the epoch callback) tries again
                log.warning("heartbeat of trial %s failed", self.claim.number, exc_info=True)
                continue
            if beat.stop_reason:
                self.stop_reason = beat.stop_reason
