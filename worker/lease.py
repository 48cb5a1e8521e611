"""Keeping a claimed trial's lease alive in the background, from the claim to the trial's last write, and
fencing every write of the trial with it."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from server.core import queue
from server.core.config import Settings
from server.core.db import retry_db
from server.core.models import StopReason
from worker.exceptions import TrialStopped

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews a claimed trial's lease every ``heartbeat_seconds`` while the trial runs.

    Epoch callbacks renew it too, but the lease must also outlive what comes before the first epoch (the Optuna
    trial, the MLflow run, loading data) and after the last (checkpoint uploads, the summary): on a slow
    store or a busy machine those alone can take longer than a short lease, and another worker would
    reclaim a trial that is still running. ``stop_reason`` is what the store last said (lost lease, cancel).

    Every write of the trial (checkpoints, MLflow metrics and artifacts, Optuna reports) first calls
    :meth:`confirm`: a process stopped past its lease (SIGSTOP, a stalled VM) and then continued must find out
    from the store that its trial was taken before it writes anything, not after.
    """

    def __init__(self, sessions: sessionmaker[Session], claim: queue.Claim, worker_id: str, settings: Settings) -> None:
        self.sessions, self.claim, self.worker_id, self.settings = sessions, claim, worker_id, settings
        self.stop_reason: StopReason | None = None
        self._renewed = time.monotonic()  # when the last renewal that succeeded was sent (the claim's, at first)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="heartbeat")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    @property
    def trusted_for(self) -> float:
        """How long after a renewal the lease is taken as ours without asking the store: half the lease, a margin
        for clocks and for the time a renewal takes to reach the store."""
        return self.settings.lease_seconds / 2

    def beat(self, *, epochs_done: int | None = None, value: float | None = None) -> queue.Beat:
        """Renew the lease now (recording progress); what the store said is kept in ``stop_reason``."""
        sent = time.monotonic()
        beat = queue.heartbeat(self.sessions, self.claim.row_id, self.worker_id, self.settings.lease_seconds,
                               epochs_done=epochs_done, value=value)
        if beat.owned:
            self._renewed = max(self._renewed, sent)
        if beat.stop_reason:
            self.stop_reason = beat.stop_reason
        return beat

    def holds(self) -> bool:
        """Whether the trial is still this worker's: known from a renewal less than ``trusted_for`` ago, else
        asked of the store (a renewal, riding out a database restart of VITSWEEP_DB_WAIT_SECONDS)."""
        if self.stop_reason is StopReason.lease_lost:
            return False
        if time.monotonic() - self._renewed < self.trusted_for:
            return True
        beat = retry_db(self.beat, max_wait=self.settings.db_wait_seconds, what="confirming the lease")
        if not beat.owned:
            log.warning("trial %s: lease lost (this worker was stalled past it); writing nothing more",
                        self.claim.number)
        return beat.owned

    def confirm(self) -> None:
        """Raise :class:`TrialStopped` (lease lost) unless the trial is still this worker's: call before a write."""
        if not self.holds():
            raise TrialStopped(StopReason.lease_lost)

    def _loop(self) -> None:
        while not self._done.wait(self.settings.heartbeat_seconds):
            try:
                self.beat()
            except Exception:  # a database hiccup: the next beat (or the epoch callback) tries again
                log.warning("heartbeat of trial %s failed", self.claim.number, exc_info=True)
