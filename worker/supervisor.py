"""The worker supervisor: one child process per trial slot, graceful shutdown, restarts of crashed slots.

Signal handlers only set an event. The first SIGINT/SIGTERM asks every slot to stop at its next epoch
boundary (its trial goes back to the queue with a checkpoint); a second one, or the shutdown timeout,
kills the slots at once.

With ``slots_per_device="auto"`` each GPU starts with one slot and grows one at a time while the store's
per-trial figures say that total throughput still rises and memory allows (see :mod:`worker.slots`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import FrameType

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import migrations
from server.core.backends import make_backends
from server.core.config import Settings
from server.core.db import is_transient
from server.core.models import Trial, TrialState, utcnow
from server.core.objectives import stored_figure
from worker.slots import AutoSlots, SlotCount, TrialThroughput, cpu_slots, device_memory_bytes
from worker.worker import Worker, WorkerOptions, worker_id

log = logging.getLogger(__name__)


def parse_devices(spec: str) -> list[str]:
    """``cpu`` | ``cuda:0,cuda:1`` | ``all`` (every visible GPU, or the CPU where there is none)."""
    import torch

    spec = spec.strip()
    if spec == "all":
        n = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    if not devices:
        raise ValueError(f"no device given in {spec!r}; use cpu, cuda:0,cuda:1 or all")
    for d in devices:
        if d == "cpu":
            continue
        if d == "cuda":
            d = "cuda:0"
        if not d.startswith("cuda:") or not d[5:].isdigit():
            raise ValueError(f"unknown device {d!r}; use cpu, cuda:N or all")
        if int(d[5:]) >= torch.cuda.device_count():
            raise ValueError(f"device {d!r} is not visible; {torch.cuda.device_count()} CUDA device(s) found")
    return ["cuda:0" if d == "cuda" else d for d in devices]


def slot_threads(n_slots: int, env: Mapping[str, str] | None = None) -> int:
    """torch threads of each slot: the cores this process may use shared among ``n_slots`` slots, at most
    ``OMP_NUM_THREADS`` where that is set (the usual cap of a process's threads, e.g. beside other jobs)."""
    env = os.environ if env is None else env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // max(1, n_slots))
    cap = env.get("OMP_NUM_THREADS", "").strip()
    return min(share, int(cap)) if cap.isdigit() and int(cap) > 0 else share


@dataclass
class SupervisorOptions:
    devices: list[str]
    slots_per_device: SlotCount = 1
    max_trials: int | None = None
    burst: bool = False
    shutdown_timeout: float = 60.0
    restart_delay: float = 2.0
    auto_check_seconds: float = 15.0  # how often ``auto`` reads the store for new measurements


def _child(settings: Settings, options: WorkerOptions, threads: int, supervisor_pid: int) -> None:
    """Entry point of one slot process: the supervisor's own settings, passed in (pickled to the fork server)."""
    import torch

    # A terminal's Ctrl-C goes to the supervisor only, which forwards one SIGTERM: otherwise each slot would
    # see two signals (the group's SIGINT and the forwarded one) and stop at once instead of gracefully.
    os.setpgrp()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [slot {options.device}/{options.slot}] %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    worker = Worker(settings, options)
    signals = 0

    def handle(signum: int, _frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            worker.stop()
        else:
            os._exit(128 + signum)  # a second signal stops at once

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    def watch_parent() -> None:  # an orphaned slot (supervisor killed) stops gracefully
        while not worker.stopping:
            try:
                os.kill(supervisor_pid, 0)  # signal 0: only asks whether the process exists
            except ProcessLookupError:
                worker.stop()
                return
            time.sleep(1.0)

    threading.Thread(target=watch_parent, daemon=True, name="parent-watch").start()
    worker.run()


class Supervisor:
    def __init__(self, settings: Settings, options: SupervisorOptions) -> None:
        self.settings = settings
        self.options = options
        self._stop = threading.Event()
        self._kill = threading.Event()
        # Slots are forked from a fork server that imported the worker (torch, MLflow, Optuna, the models) once:
        # a slot starts in a fraction of a second instead of importing it all again, and CUDA is only ever
        # initialised in the slots themselves (never in a process that forks), as PyTorch requires.
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(["worker.supervisor"])

    def stop(self, now: bool = False) -> None:
        (self._kill if now else self._stop).set()

    def _initial_slots(self, device: str) -> int:
        """Slots a device starts with: the fixed count, or for ``auto`` one per GPU and one per two CPU cores."""
        count = self.options.slots_per_device
        if count == "auto":
            return cpu_slots() if device == "cpu" else 1
        return count

    def _slot(self, device: str, slot: int) -> WorkerOptions:
        return WorkerOptions(device=device, slot=slot, max_trials=self.options.max_trials, burst=self.options.burst)

    def _slots(self) -> list[WorkerOptions]:
        return [self._slot(d, s) for d in self.options.devices for s in range(self._initial_slots(d))]

    def _threads(self, n_slots: int) -> int:
        cpu_slots = sum(self._initial_slots(d) for d in self.options.devices if d == "cpu")
        return slot_threads(cpu_slots or n_slots)

    def _spawn(self, slot: WorkerOptions, threads: int) -> mp.process.BaseProcess:
        proc = self._ctx.Process(target=_child, args=(self.settings, slot, threads, os.getpid()),
                                 name=f"vitsweep-{slot.device}-{slot.slot}")
        proc.start()
        return proc

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            self.stop(now=self._stop.is_set())

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def run(self) -> int:
        """Run every slot until stopped (or, in burst mode, until all slots exit); returns an exit code."""
        # Bring the store to this code's schema once, before any slot starts: under the migration lock, so workers
        # (and the API) starting together on a fresh store migrate it exactly once.
        try:
            migrations.upgrade(self.settings.db_url)
        except migrations.SchemaError as exc:
            log.error("the store cannot be used: %s", exc)
            return 2
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.error("the store is unreachable (%s: %s); start the database, then the worker",
                      type(exc).__name__, str(exc).strip().splitlines()[0][:200])
            return 2
        if self._stop.is_set() or self._kill.is_set():
            log.info("stopped before any slot started")
            return 0
        backends = make_backends(self.settings)
        slots = self._slots()
        threads = self._threads(len(slots))
        procs = {i: self._spawn(s, threads) for i, s in enumerate(slots)}
        log.info("supervisor started %d slot(s) on %s", len(procs), ", ".join(self.options.devices))
        auto = self._auto_devices()
        pids: dict[int, list[int]] = {i: [p.pid] for i, p in procs.items() if p.pid is not None}
        retired: set[int] = set()
        last_check = time.monotonic()
        stop_sent_at: float | None = None
        while procs:
            if auto and stop_sent_at is None and time.monotonic() - last_check > self.options.auto_check_seconds:
                last_check = time.monotonic()
                self._autoscale(auto, backends.sessions, slots, procs, pids, retired, threads)
            if self._kill.is_set():
                for p in procs.values():
                    p.kill()
            elif self._stop.is_set() and stop_sent_at is None:
                stop_sent_at = time.monotonic()
                for p in procs.values():
                    if p.pid is not None:
                        os.kill(p.pid, signal.SIGTERM)
            elif stop_sent_at is not None and time.monotonic() - stop_sent_at > self.options.shutdown_timeout:
                log.warning("slots still running after %.0fs; killing them", self.options.shutdown_timeout)
                self._kill.set()
                continue
            for i, p in list(procs.items()):
                p.join(timeout=0.2)
                if p.is_alive():
                    continue
                code = p.exitcode
                del procs[i]
                if stop_sent_at is not None or self._kill.is_set() or i in retired:
                    continue
                if code == 0 and (self.options.burst or self.options.max_trials is not None):
                    continue  # the slot finished its work
                log.warning("slot %s exited with code %s; restarting in %.0fs", slots[i], code, self.options.restart_delay)
                self._stop.wait(self.options.restart_delay)
                if not self._stop.is_set():
                    procs[i] = self._spawn(slots[i], threads)
                    pids.setdefault(i, []).append(procs[i].pid or 0)
        return 0

    # -- slots-per-device auto ------------------------------------------------------------------------------

    def _auto_devices(self) -> dict[str, AutoSlots]:
        """The GPUs whose slot count ``auto`` grows (the CPU's is fixed), each measured from now on."""
        if self.options.slots_per_device != "auto":
            return {}
        auto = {}
        for device in self.options.devices:
            if device != "cpu":
                auto[device] = AutoSlots(device_memory_bytes(device))
                auto[device].start_level(utcnow())
        return auto

    def _autoscale(
        self, auto: dict[str, AutoSlots], sessions: sessionmaker[Session], slots: list[WorkerOptions],
        procs: dict[int, mp.process.BaseProcess], pids: dict[int, list[int]], retired: set[int], threads: int,
    ) -> None:
        """Measure each growing device's current slot count from its finished trials; add or retire a slot."""
        host = socket.gethostname()
        for device, state in auto.items():
            if state.settled or state.since is None:
                continue
            live = [i for i, s in enumerate(slots) if s.device == device and i not in retired]
            # One worker id per live slot, as Worker names itself; a restarted slot keeps its earlier ids.
            ids = {i: [worker_id(device, slots[i].slot, host=host, pid=pid) for pid in pids.get(i, [])] for i in live}
            try:
                trials = _finished_trials(sessions, device, state.since)
            except Exception:
                log.warning("auto slots: could not read trial figures; will try again", exc_info=True)
                continue
            decision = state.step(trials, ids)
            if decision is None:
                continue
            log.info("auto slots on %s: %s -> %d slot(s): %s", device, decision.action, decision.slots, decision.reason)
            if decision.action == "grow":
                slots.append(self._slot(device, max(s.slot for s in slots if s.device == device) + 1))
                i = len(slots) - 1
                procs[i] = self._spawn(slots[i], threads)
                pids[i] = [procs[i].pid or 0]
                state.start_level(utcnow())
            elif decision.action == "shrink":
                newest = max(live, key=lambda i: slots[i].slot)
                retired.add(newest)
                proc = procs.get(newest)
                if proc is not None and proc.pid is not None:
                    os.kill(proc.pid, signal.SIGTERM)  # finishes its epoch and hands its trial back


def _finished_trials(sessions: sessionmaker[Session], device: str, since: object) -> list[TrialThroughput]:
    """Throughput and memory of the trials on ``device`` that started at or after ``since`` and finished."""
    with sessions() as session:
        rows = session.execute(
            select(Trial.worker_id, Trial.started_at, Trial.metrics).where(
                Trial.device == device, Trial.started_at >= since,
                Trial.state.in_([TrialState.completed, TrialState.pruned]),
            )
        ).all()
    out = []
    for owner, started_at, metrics in rows:
        metrics = metrics or {}
        rate = stored_figure(metrics, "median_images_per_second")
        if owner and started_at is not None and isinstance(rate, (int, float)):
            out.append(TrialThroughput(owner, started_at, float(rate), float(metrics.get("peak_memory_bytes") or 0.0)))
    return out


def run_supervisor(settings: Settings, options: SupervisorOptions) -> int:
    supervisor = Supervisor(settings, replace(options))
    supervisor.install_signal_handlers()
    return supervisor.run()
