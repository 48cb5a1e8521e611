"""A worker slot: claim a trial, run it, repeat. ``run()`` and ``stop()`` are its public face."""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy import func, select

from server.core import queue, sweeps
from server.core.backends import Backends, make_backends
from server.core.config import Settings
from server.core.db import retry_db
from server.core.models import Sweep, SweepState, Trial, TrialState
from worker.training import TrainFn
from worker.trial import TrialRunner

log = logging.getLogger(__name__)


def worker_id(device: str, slot: int, *, host: str | None = None, pid: int | None = None) -> str:
    """How a slot names itself in the store (``host:pid:device:slot``): unique per process, and readable."""
    return f"{host or socket.gethostname()}:{pid if pid is not None else os.getpid()}:{device}:{slot}"


def share_compile_cache(home: Path) -> Path:
    """torch.compile's on-disk caches (Inductor's FX graphs and autograd graphs, Triton's kernels) under the
    vitsweep home, shared by every slot and trial on this machine: a trial of an architecture another trial
    compiled before loads its kernels instead of compiling them again. A cache directory set in the
    environment (``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``) is kept."""
    inductor = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home / "cache" / "inductor")))
    os.environ.setdefault("TRITON_CACHE_DIR", str(inductor / "triton"))
    return inductor


def settle_heap() -> None:
    """Collect what the last trial left, and freeze what outlived it (modules, the worker's own state) as the
    process's for good: the full collection each trial starts with (``PeakMemory``) then walks only that trial's
    objects. Walking every module's objects again was 0.2 s a trial in a slot process, 0.4 s in a test process.
    ``Worker.run`` unfreezes on its way out, for a process that goes on without it."""
    gc.collect()
    gc.freeze()


@dataclass
class WorkerOptions:
    device: str = "cpu"
    slot: int = 0
    max_trials: int | None = None  # stop after this many trials (None: run until stopped)
    burst: bool = False  # exit once no trial is queued or running in a running sweep


class Worker:
    """Runs trials on one device slot until stopped (or, in burst mode, until the queue is drained).

    ``train`` replaces the real training (``worker.trial.SpecTrainer``), e.g. in tests and benchmarks.
    """

    def __init__(
        self, settings: Settings, options: WorkerOptions, backends: Backends | None = None, train: TrainFn | None = None
    ) -> None:
        self.settings = settings
        self.options = options
        self.backends = backends or make_backends(settings, db_wait=settings.db_wait_seconds)
        self.backends.tracker.start_background()  # per-epoch MLflow metrics off the training thread
        share_compile_cache(settings.home)
        self.worker_id = worker_id(options.device, options.slot)
        self._stop = threading.Event()
        self.device = torch.device(options.device)
        self.runner = TrialRunner(self.backends, settings, device=self.device, worker_id=self.worker_id,
                                  shutdown=self._stop, train=train)
        self.trials_run = 0

    def stop(self) -> None:
        """Ask the worker to stop: the running trial stops at its next epoch boundary and goes back to the queue."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Claim and run trials until stopped; returns the number of trials this worker finished or released."""
        log.info("worker %s started", self.worker_id)
        try:
            self._loop()
        finally:
            gc.unfreeze()
        if not self.backends.tracker.flush(timeout=60):  # a released trial's last epochs, before the process ends
            log.warning("worker %s: some MLflow metrics were still unsent after 60s", self.worker_id)
        log.info("worker %s stopped after %d trials", self.worker_id, self.trials_run)
        return self.trials_run

    def _loop(self) -> None:
        last_reap = 0.0
        settle_heap()
        while not self._stop.is_set():
            if self.options.max_trials is not None and self.trials_run >= self.options.max_trials:
                break
            now = time.monotonic()
            if now - last_reap > min(self.settings.lease_seconds / 2, 30.0):
                self._reap()
                last_reap = now
            self._expire()
            claim = retry_db(
                lambda: queue.claim(self.backends.sessions, self.worker_id, self.options.device, self.settings.lease_seconds),
                max_wait=self.settings.db_wait_seconds, what="claiming a trial",
            )
            if claim is None:
                if self.options.burst and not self._work_left():
                    break
                self._stop.wait(self.settings.poll_seconds)
                continue
            log.info("worker %s runs trial %s of sweep %s", self.worker_id, claim.number, claim.sweep_id)
            try:
                state = self.runner.run(claim)
            except Exception:  # the runner reports a trial's own failures; this is its reporting failing too
                log.exception("trial %s of sweep %s: could not be run or its end recorded; its lease will run out",
                              claim.number, claim.sweep_id)
                state = None
            log.info("trial %s of sweep %s ended: %s", claim.number, claim.sweep_id, state.value if state else "released")
            self.trials_run += 1
            settle_heap()

    def _reap(self) -> None:
        """Requeue trials of dead workers; close the ones out of attempts in Optuna and MLflow too."""
        try:
            retry_db(lambda: sweeps.reap_expired(self.backends, self.settings.max_attempts),
                     max_wait=self.settings.db_wait_seconds, what="reaping expired leases")
        except Exception:
            log.warning("reaping expired leases failed; will try again", exc_info=True)

    def _expire(self) -> None:
        """Sweeps past their timeout: their queued trials are cancelled; close what that ended in Optuna and MLflow."""
        try:
            sweeps.expire_deadlines(self.backends)
        except Exception:
            log.warning("expiring timed-out sweeps failed; will try again", exc_info=True)

    def _work_left(self) -> bool:
        def count() -> int | None:
            with self.backends.sessions() as session:
                return session.scalar(
                    select(func.count())
                    .select_from(Trial)
                    .join(Sweep, Sweep.id == Trial.sweep_id)
                    .where(Sweep.state == SweepState.running,  # a paused sweep is no work for a burst worker
                           Trial.state.in_([TrialState.queued, TrialState.running]))
                )

        return bool(retry_db(count, max_wait=self.settings.db_wait_seconds, what="counting open trials"))
