"""One claimed trial, start to finish: ask Optuna, build model and data, train, report, tell, record.

Every epoch goes to three places at once: Optuna (``report`` and the pruning decision), MLflow (metrics with
``step``), and the store (heartbeat with progress, which also tells us about cancels and lost leases).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import optuna
import torch
from sqlalchemy.orm import Session, sessionmaker

from server import queue, studies
from server.core.config import Settings
from server.core.db import retry_db
from server.models import SweepState, TrialState
from server.spec import ExperimentSpec
from server.store import Backends
from server.tracking import run_name
from worker.exceptions import PermanentTrialError, TrialPruned, TrialStopped
from worker.retry import Outcome, RetryPolicy, describe

log = logging.getLogger(__name__)

STOP_LEASE_LOST = "lease lost"
STOP_CANCELLED = "sweep cancelled"
STOP_SHUTDOWN = "worker shutting down"
T = TypeVar("T")


class DataCache:
    """Keeps the last few loaded datasets: the trials of one sweep nearly always share theirs."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, spec: ExperimentSpec, root: Path, download: bool) -> Any:
        from worker.data import load_dataset

        ds = spec.dataset
        key = json.dumps([ds.model_dump(mode="json", exclude={"augment"}), spec.train.seed, str(root)], sort_keys=True)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        data = load_dataset(
            ds.name, root=root, img_size=ds.img_size, in_chans=ds.in_chans, val_fraction=ds.val_fraction,
            seed=spec.train.seed, download=download, **ds.options,
        )
        self._items[key] = data
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return data


@dataclass
class TrialContext:
    """What the epoch callback needs; one per running trial."""

    claim: queue.Claim
    spec: ExperimentSpec
    run_id: str
    optuna_trial: optuna.Trial
    best: float | None = None
    epochs_done: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    lease: LeaseKeeper | None = None

    @property
    def stop_reason(self) -> str | None:
        """Why the trial must stop, as the lease keeper heard it from the store (lost lease, cancel), or None."""
        return self.lease.stop_reason if self.lease is not None else None


class LeaseKeeper:
    """Renews a claimed trial's lease in the background, from the claim to the trial's last write.

    Epoch callbacks renew it too, but the lease must also outlive what comes before the first epoch (the Optuna
    ask, the MLflow run, loading data) and after the last (checkpoint uploads, the summary): on a slow
    store or a busy machine those alone can take longer than a short lease, and another worker would
    reclaim a trial that is still running.
    """

    def __init__(self, sessions: sessionmaker[Session], claim: queue.Claim, worker_id: str, settings: Settings) -> None:
        self.sessions, self.claim, self.worker_id, self.settings = sessions, claim, worker_id, settings
        self.stop_reason: str | None = None
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
                beat = queue.heartbeat(self.sessions, self.claim.trial_id, self.worker_id, self.settings.lease_seconds)
            except Exception:  # a database hiccup: the next beat (or the epoch callback) tries again
                log.warning("heartbeat of trial %s failed", self.claim.number, exc_info=True)
                continue
            if not beat.owned or beat.stop_reason:
                self.stop_reason = beat.stop_reason or STOP_LEASE_LOST


class TrialRunner:
    """Runs claimed trials for one worker slot."""

    def __init__(
        self, backends: Backends, settings: Settings, *, device: torch.device, worker_id: str,
        shutdown: threading.Event, retry: RetryPolicy | None = None,
    ) -> None:
        self.backends = backends
        self.settings = settings
        self.device = device
        self.worker_id = worker_id
        self.shutdown = shutdown
        self.retry = retry or RetryPolicy(settings.max_attempts)
        self.data = DataCache()

    # -- setup ------------------------------------------------------------------------------------------

    def _db(self, fn: Callable[[], T], what: str) -> T:
        """A store or Optuna call (each idempotent) that rides out a database restart of VITSWEEP_DB_WAIT_SECONDS."""
        return retry_db(fn, max_wait=self.settings.db_wait_seconds, what=what)

    def _workdir(self, claim: queue.Claim) -> Path:
        return self.settings.home / "trials" / f"sweep{claim.sweep_id}-trial{claim.number}"

    def _start(self, claim: queue.Claim, started: Started) -> TrialContext:
        """Take the claimed row to a running trial: its Optuna trial, parameters and MLflow run, in that order.

        Each step is recorded in the store as soon as it is done and is safe to repeat, so a failure anywhere
        (the database restarting, the worker killed) leaves the row to be retried or re-claimed, and that
        reuses the Optuna trial and MLflow run made so far instead of leaving a second one behind.
        """
        spec = ExperimentSpec.model_validate(claim.spec)
        storage, tracker, sessions = self.backends.storage, self.backends.tracker, self.backends.sessions
        if claim.resuming:
            assert claim.optuna_trial_id is not None and claim.params is not None and claim.mlflow_run_id
            started.optuna_trial_id, started.run_id = claim.optuna_trial_id, claim.mlflow_run_id
            trial = studies.reattach(storage, claim.study_name, spec, claim.optuna_trial_id, claim.number)
            tracker.resume_trial(claim.mlflow_run_id)
            resolved = spec.resolve(claim.params)
            return TrialContext(claim, resolved, claim.mlflow_run_id, trial)
        if claim.optuna_trial_id is None:
            trial_id, number = self._db(lambda: studies.create_trial(storage, claim.study_name, claim.number),
                                        "creating the Optuna trial")
            started.optuna_trial_id = trial_id
            self._owned(self._db(lambda: queue.bind(
                sessions, claim.trial_id, self.worker_id, optuna_trial_id=trial_id, optuna_trial_number=number,
            ), "recording the Optuna trial"))
        else:
            trial_id = started.optuna_trial_id = claim.optuna_trial_id
        fixed = claim.params if spec.is_grid else None
        trial, params = self._db(lambda: studies.suggest_params(
            storage, claim.study_name, spec, trial_id, trial_number=claim.number, fixed=fixed,
        ), "asking Optuna")
        resolved = spec.resolve(params)
        # A row that had its Optuna trial before this claim may have had its run created too.
        run_id = started.run_id = tracker.start_trial(
            claim.parent_run_id or "", claim.sweep_id, claim.number,
            run_name(claim.sweep_name, claim.sweep_id, claim.number, claim.slug),
            resolved.model_dump(mode="json"), params, reuse=claim.optuna_trial_id is not None,
        )
        self._owned(self._db(lambda: queue.attach(sessions, claim.trial_id, self.worker_id, params=params,
                                                  mlflow_run_id=run_id), "attaching the trial"))
        return TrialContext(claim, resolved, run_id, trial)

    @staticmethod
    def _owned(still_ours: bool) -> None:
        if not still_ours:
            raise TrialStopped(STOP_LEASE_LOST)

    # -- per epoch --------------------------------------------------------------------------------------

    def _on_epoch(self, ctx: TrialContext, report: Any) -> None:
        epoch, metrics = report.epoch, report.metrics
        ctx.epochs_done = epoch
        ctx.history.append(dict(metrics))
        self.backends.tracker.log_epoch(ctx.run_id, epoch, metrics)
        if report.checkpoint is not None and self.settings.sync_checkpoints:
            self.backends.tracker.log_artifacts(ctx.run_id, {"checkpoints": Path(report.checkpoint)})
        value = metrics.get(ctx.spec.metric)
        if value is not None and value == value:  # NaN never becomes the best
            better = max if ctx.spec.direction == "maximize" else min
            ctx.best = value if ctx.best is None else better(ctx.best, value)
            if not ctx.spec.multi_objective:  # Optuna takes per-epoch reports (and prunes) for one objective only
                self._db(lambda: ctx.optuna_trial.report(float(value), epoch), "reporting to Optuna")
        beat = self._db(lambda: queue.heartbeat(
            self.backends.sessions, ctx.claim.trial_id, self.worker_id, self.settings.lease_seconds,
            epochs_done=epoch, value=ctx.best,
        ), "heartbeat")
        if not beat.owned:
            raise TrialStopped(STOP_LEASE_LOST)
        if beat.stop_reason:
            raise TrialStopped(beat.stop_reason)
        # A shutdown is not raised here: the engine polls stop() right after, and writes last.pt first.
        if not ctx.spec.multi_objective and self._db(ctx.optuna_trial.should_prune, "asking the pruner"):
            raise TrialPruned(epoch)

    def _resume_point(self, ctx: TrialContext, workdir: Path) -> Path | None:
        """The checkpoint to resume a reclaimed trial from, with its history caught up everywhere.

        The dead worker may have written ``last.pt`` for an epoch it never reported: those epochs are
        reported now, so MLflow's and Optuna's histories stay continuous.
        """
        last = workdir / "last.pt"
        if not ctx.claim.resuming:
            shutil.rmtree(workdir, ignore_errors=True)  # leftovers of an unrelated earlier run
            workdir.mkdir(parents=True, exist_ok=True)
            return None
        workdir.mkdir(parents=True, exist_ok=True)
        if not last.exists():
            self._fetch_checkpoint(ctx, last)
        if not last.exists():
            log.warning("trial %s: no checkpoint under %s; starting it again from epoch 1", ctx.claim.number, workdir)
            return None
        from worker.engine.checkpoint import read

        state = read(last)
        history = state.get("history", [])
        # Epoch metrics reach MLflow from a background thread, so a worker killed right after an epoch may have
        # recorded it in the store but not in MLflow: MLflow is caught up by its own history, not the store's.
        in_mlflow = self.backends.tracker.logged_steps(
            ctx.run_id, next((k for k in history[0] if k != "epoch"), "") if history else "",
            default=range(1, ctx.claim.epochs_done + 1),
        )
        for row in history:
            epoch = int(row["epoch"])
            metrics = {k: float(v) for k, v in row.items() if k != "epoch"}
            ctx.epochs_done = epoch
            ctx.history.append(metrics)
            value = metrics.get(ctx.spec.metric)
            if value is not None and value == value:
                better = max if ctx.spec.direction == "maximize" else min
                ctx.best = value if ctx.best is None else better(ctx.best, value)
            if epoch not in in_mlflow:
                self.backends.tracker.log_epoch(ctx.run_id, epoch, metrics)
            if epoch > ctx.claim.epochs_done:
                if value is not None and value == value and not ctx.spec.multi_objective:
                    ctx.optuna_trial.report(value, epoch)
        self.backends.tracker.client.set_tag(ctx.run_id, "vitsweep.resumed_from_epoch", str(state.get("epoch", 0)))
        log.info("trial %s resumes from its epoch-%s checkpoint", ctx.claim.number, state.get("epoch"))
        return last

    def _fetch_checkpoint(self, ctx: TrialContext, last: Path) -> None:
        """The dead worker ran on another machine: take its last synced checkpoint from the MLflow run."""
        try:
            fetched = self.backends.tracker.client.download_artifacts(ctx.run_id, "checkpoints/last.pt", str(last.parent))
        except Exception:  # no synced checkpoint (sync off, or killed before its first epoch)
            return
        Path(fetched).replace(last)
        log.info("trial %s: fetched its checkpoint from MLflow run %s", ctx.claim.number, ctx.run_id)

    # -- the whole trial --------------------------------------------------------------------------------

    def run(self, claim: queue.Claim) -> TrialState | None:
        """Run one claimed trial; returns its final state, or None if it went back to the queue."""
        with LeaseKeeper(self.backends.sessions, claim, self.worker_id, self.settings) as lease:
            return self._run(claim, lease)

    def _run(self, claim: queue.Claim, lease: LeaseKeeper) -> TrialState | None:
        started = Started()
        try:
            ctx = self._start(claim, started)
        except TrialStopped:
            log.warning("trial %s: lease lost while starting; leaving it to its new owner", claim.number)
            return None
        except Exception as exc:
            return self._fail_before_start(claim, started, exc)
        ctx.lease = lease
        workdir = self._workdir(claim)
        resume = self._resume_point(ctx, workdir)
        try:
            result = self._train(ctx, workdir, resume)
        except TrialPruned as exc:
            return self._finish(ctx, TrialState.pruned, metrics=_partial_figures(ctx.history), error=exc.reason)
        except TrialStopped as exc:
            reason = ctx.stop_reason or (STOP_SHUTDOWN if self.shutdown.is_set() else exc.reason)
            return self._stopped(ctx, reason)
        except Exception as exc:
            log.exception("trial %s of sweep %s failed", claim.number, claim.sweep_id)
            if self.retry.classify(exc, claim.attempts) is Outcome.requeue:
                reason = describe(exc)
                self._db(lambda: queue.release(self.backends.sessions, claim.trial_id, self.worker_id,
                                               epochs_done=ctx.epochs_done, reason=reason), "releasing the trial")
                return None
            return self._finish(ctx, TrialState.failed, error=describe(exc))
        tracker = self.backends.tracker
        tracker.log_artifacts(ctx.run_id, {"plots": workdir / "plots"})
        for path in result.checkpoints.values():
            tracker.log_artifacts(ctx.run_id, {"checkpoints": Path(path)})
        summary = {k: v for k, v in result.summary.items() if isinstance(v, (int, float))}
        per_epoch = set(ctx.history[-1]) if ctx.history else set()
        # A summary figure named like a per-epoch metric (images_per_second: the median) must not add a
        # point to that metric's curve.
        tracker.log_summary(ctx.run_id, {f"median_{k}" if k in per_epoch else k: v for k, v in summary.items()},
                            step=ctx.epochs_done)
        return self._finish(ctx, TrialState.completed, value=ctx.best, metrics=summary)

    def _train(self, ctx: TrialContext, workdir: Path, resume: Path | None) -> Any:
        from vitmodels import create_model
        from worker.engine import fit

        spec = ctx.spec
        data = self.data.get(spec, self.settings.datasets_dir, self.settings.download)
        pretrained = _confined(self.settings.datasets_dir, spec.model.pretrained) if spec.model.pretrained else None
        torch.manual_seed(spec.train.seed)
        model = create_model(
            spec.model.name, num_classes=data.num_classes, img_size=spec.dataset.img_size,
            in_chans=spec.dataset.in_chans, code_size=spec.model.code_size, pretrained=pretrained, **spec.model.arch,
        )

        def stop() -> bool:
            return ctx.stop_reason is not None or self.shutdown.is_set()

        def on_epoch(report: Any) -> None:
            if ctx.stop_reason:
                raise TrialStopped(ctx.stop_reason)
            self._on_epoch(ctx, report)

        return fit(model, data, spec, device=self.device, on_epoch=on_epoch, workdir=workdir, resume=resume, stop=stop)

    # -- endings ----------------------------------------------------------------------------------------

    def _finish(
        self, ctx: TrialContext, state: TrialState, *, value: float | None = None,
        metrics: dict[str, Any] | None = None, error: str | None = None,
    ) -> TrialState | None:
        optuna_state = {
            TrialState.completed: optuna.trial.TrialState.COMPLETE,
            TrialState.pruned: optuna.trial.TrialState.PRUNED,
        }.get(state, optuna.trial.TrialState.FAIL)
        # A multi-objective trial tells Optuna every objective; the store keeps the first as its value.
        told = studies.objective_values(ctx.spec, ctx.history, metrics or {}) if state is TrialState.completed else None
        if told is not None:
            metrics = {**(metrics or {}), "objectives": dict(zip(ctx.spec.objectives, told, strict=True))}
        written, sweep_state = self._db(lambda: queue.finish(
            self.backends.sessions, ctx.claim.trial_id, self.worker_id, state, value=value if value is not None else ctx.best,
            metrics=metrics, error=error, epochs_done=ctx.epochs_done,
        ), "writing the trial's result")
        if not written:  # the lease was lost meanwhile: another worker owns the trial now
            log.warning("trial %s: lease lost before its result could be written", ctx.claim.number)
            return None
        self._db(lambda: studies.tell(self.backends.storage, ctx.optuna_trial._trial_id, optuna_state,
                                      told if told is not None else value), "telling Optuna")
        self.backends.tracker.finish_trial(ctx.run_id, state.value, error)
        if sweep_state is SweepState.completed and ctx.claim.parent_run_id:
            self._close_sweep(ctx)
        return state

    def _close_sweep(self, ctx: TrialContext) -> None:
        from server.store import get_sweep

        view = get_sweep(self.backends.sessions, ctx.claim.sweep_id)
        best = {}
        if view.best is not None and view.best.value is not None:
            best[view.sweep.metric] = view.best.value
        self.backends.tracker.finish_sweep(ctx.claim.parent_run_id or "", "completed", best)

    def _stopped(self, ctx: TrialContext, reason: str) -> TrialState | None:
        if reason == STOP_LEASE_LOST:
            log.warning("trial %s: lease lost; leaving it to its new owner", ctx.claim.number)
            return None
        if reason == STOP_SHUTDOWN:
            self._db(lambda: queue.release(self.backends.sessions, ctx.claim.trial_id, self.worker_id,
                                           epochs_done=ctx.epochs_done,
                                           reason="worker shut down; will resume from its checkpoint"),
                     "releasing the trial")
            return None
        return self._finish(ctx, TrialState.cancelled, error=reason)

    def _fail_before_start(self, claim: queue.Claim, started: Started, exc: Exception) -> TrialState | None:
        """Starting the trial failed: requeue it (infrastructure; a retry reuses what was made so far) or fail it
        (a bad spec) together with its Optuna trial and MLflow run if it had them."""
        log.exception("trial %s of sweep %s could not start", claim.number, claim.sweep_id)
        if self.retry.classify(exc, claim.attempts) is Outcome.requeue:
            self._db(lambda: queue.release(self.backends.sessions, claim.trial_id, self.worker_id,
                                           epochs_done=claim.epochs_done, reason=describe(exc)), "releasing the trial")
            return None
        error = describe(exc)
        written, _ = self._db(lambda: queue.finish(
            self.backends.sessions, claim.trial_id, self.worker_id, TrialState.failed, error=error
        ), "failing the trial")
        if not written:
            return None
        if started.optuna_trial_id is not None:
            trial_id = started.optuna_trial_id
            self._db(lambda: studies.tell(self.backends.storage, trial_id, optuna.trial.TrialState.FAIL), "telling Optuna")
        if started.run_id is not None:
            self.backends.tracker.finish_trial(started.run_id, TrialState.failed.value, error)
        return TrialState.failed


@dataclass
class Started:
    """How far a trial's start got: what a failed start must close when the trial fails for good."""

    optuna_trial_id: int | None = None
    run_id: str | None = None


def _partial_figures(history: list[dict[str, float]]) -> dict[str, float]:
    """What a trial stopped early still tells: its best and last epochs' figures."""
    finite = [h for h in history if h.get("val_acc") == h.get("val_acc")]
    if not finite:
        return {}
    best = max(finite, key=lambda h: h["val_acc"])
    last = history[-1]
    return {
        "best_val_acc": best["val_acc"],
        "best_epoch": float(history.index(best) + 1),  # history starts at epoch 1, resumed or not
        "final_train_acc": last.get("train_acc", float("nan")),
        "final_val_loss": last.get("val_loss", float("nan")),
        "seconds_per_epoch": sum(h.get("epoch_seconds", 0.0) for h in history) / len(history),
        "images_per_second": sorted(h.get("images_per_second", 0.0) for h in history)[len(history) // 2],
    }


def _confined(root: Path, relative: str) -> Path:
    """Resolve a spec-given path under ``root``; absolute paths and ``..`` escapes are refused."""
    candidate = Path(relative)
    if candidate.is_absolute():
        raise PermanentTrialError(f"model.pretrained must be relative to the data directory, got {relative!r}")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise PermanentTrialError(f"model.pretrained escapes the data directory: {relative!r}")
    return resolved
