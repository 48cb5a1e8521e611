"""One claimed trial, start to finish: its Optuna trial and MLflow run, training, reports, and its end.

Every epoch goes to three places at once: Optuna (``report`` and the pruning decision), MLflow (metrics with
``step``), and the store (heartbeat with progress, which also tells us about cancels and lost leases). The
training itself is a function the runner is given (``worker.training``).
"""

from __future__ import annotations

import logging
import shutil
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import optuna
import torch

from server.core import queue, studies, sweeps
from server.core.backends import Backends
from server.core.config import Settings
from server.core.db import retry_db
from server.core.models import StopReason, SweepState, TrialState
from server.core.objectives import better, objective_values
from server.core.spec import ExperimentSpec
from server.core.tracking import run_name
from worker import resume
from worker.engine.results import EpochReport
from worker.engine.summary import history_summary
from worker.exceptions import DataNotFoundError, TrialPruned, TrialStopped
from worker.lease import LeaseKeeper
from worker.retry import Outcome, RetryPolicy, describe
from worker.training import SpecTrainer, TrainFn, TrainingJob

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class TrialContext:
    """What the epoch callback needs; one per running trial."""

    claim: queue.Claim
    spec: ExperimentSpec
    run_id: str
    optuna_trial: optuna.Trial
    optuna_trial_id: int
    best: float | None = None
    epochs_done: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    lease: LeaseKeeper | None = None
    logged: set[int] = field(default_factory=set)  # epochs MLflow has (a resumed run's): never logged twice

    @property
    def keeper(self) -> LeaseKeeper:
        assert self.lease is not None, "the trial's lease keeper is set before training"
        return self.lease

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the trial must stop, as the lease keeper heard it from the store (lost lease, cancel), or None."""
        return self.lease.stop_reason if self.lease is not None else None

    def record(self, epoch: int, metrics: dict[str, float]) -> float | None:
        """Take an epoch into the history and the best objective so far; returns the epoch's objective value."""
        self.epochs_done = epoch
        self.history.append(dict(metrics))
        value = metrics.get(self.spec.metric)
        if value is not None and better(value, self.best, self.spec.direction):
            self.best = float(value)
        return value


@dataclass
class Started:
    """How far a trial's start got: what a failed start must close when the trial fails for good."""

    optuna_trial_id: int | None = None
    run_id: str | None = None
    context: TrialContext | None = None  # once started: how many epochs it has


class TrialRunner:
    """Runs claimed trials for one worker slot."""

    def __init__(
        self, backends: Backends, settings: Settings, *, device: torch.device, worker_id: str,
        shutdown: threading.Event, retry: RetryPolicy | None = None, train: TrainFn | None = None,
    ) -> None:
        self.backends = backends
        self.settings = settings
        self.device = device
        self.worker_id = worker_id
        self.shutdown = shutdown
        self.retry = retry or RetryPolicy(settings.max_attempts)
        self.train = train or SpecTrainer(settings.datasets_dir, settings.download)

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
            return TrialContext(claim, resolved, claim.mlflow_run_id, trial, claim.optuna_trial_id)
        if claim.optuna_trial_id is None:
            trial_id, number = self._db(lambda: studies.create_trial(storage, claim.study_name, claim.number),
                                        "creating the Optuna trial")
            started.optuna_trial_id = trial_id
            self._owned(self._db(lambda: queue.bind(
                sessions, claim.row_id, self.worker_id, optuna_trial_id=trial_id, optuna_trial_number=number,
            ), "recording the Optuna trial"))
        else:
            trial_id = started.optuna_trial_id = claim.optuna_trial_id
        fixed = claim.params if spec.is_grid else None
        trial, params = self._db(lambda: studies.suggest_params(
            storage, claim.study_name, spec, trial_id, trial_number=claim.number, fixed=fixed,
        ), "sampling the trial's parameters")
        resolved = spec.resolve(params)
        # reuse: an earlier start of this row (its Optuna trial was recorded) may have made the MLflow run too.
        run_id = started.run_id = tracker.start_trial(
            claim.parent_run_id or "", claim.sweep_id, claim.number,
            run_name(claim.sweep_name, claim.sweep_id, claim.number, claim.slug),
            resolved.model_dump(mode="json"), params, reuse=claim.optuna_trial_id is not None,
        )
        self._owned(self._db(lambda: queue.attach(sessions, claim.row_id, self.worker_id, params=params,
                                                  mlflow_run_id=run_id), "attaching the trial"))
        return TrialContext(claim, resolved, run_id, trial, trial_id)

    @staticmethod
    def _owned(still_ours: bool) -> None:
        if not still_ours:
            raise TrialStopped(StopReason.lease_lost)

    # -- per epoch --------------------------------------------------------------------------------------

    def _on_epoch(self, ctx: TrialContext, report: EpochReport) -> None:
        if ctx.stop_reason:
            raise TrialStopped(ctx.stop_reason)
        epoch, metrics = report.epoch, report.metrics
        value = ctx.record(epoch, metrics)
        lease = ctx.keeper
        # The store first: the heartbeat records the epoch and says whether the trial is still ours, so a worker
        # stalled past its lease and continued learns that it lost the trial before it writes anything.
        beat = self._db(lambda: lease.beat(epochs_done=epoch, value=ctx.best), "heartbeat")
        if beat.stop_reason is StopReason.lease_lost:
            raise TrialStopped(beat.stop_reason)
        if epoch not in ctx.logged:
            self.backends.tracker.log_epoch(ctx.run_id, epoch, metrics, guard=lease.holds)
            ctx.logged.add(epoch)
        if report.checkpoint is not None and self.settings.sync_checkpoints:
            lease.confirm()
            self.backends.tracker.log_artifacts(ctx.run_id, {"checkpoints": Path(report.checkpoint)})
        # Optuna takes per-epoch reports (and prunes) for one objective only; NaN is never reported.
        if not ctx.spec.multi_objective and value is not None and value == value:
            lease.confirm()
            self._report(ctx, float(value), epoch)
        if beat.stop_reason:
            raise TrialStopped(beat.stop_reason)
        # A shutdown is not raised here: the engine polls stop() right after, and writes last.pt first.
        if not ctx.spec.multi_objective and self._db(ctx.optuna_trial.should_prune, "asking the pruner"):
            raise TrialPruned(epoch)

    def _report(self, ctx: TrialContext, value: float, epoch: int) -> None:
        """Report an epoch's objective to Optuna; an epoch it has already (retrained after a resume) stays as it was."""
        def report() -> None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The reported value is ignored")
                ctx.optuna_trial.report(value, epoch)

        self._db(report, "reporting to Optuna")

    def _resume_point(self, ctx: TrialContext, trial_dir: Path) -> tuple[Path | None, Path]:
        """This attempt's own folder, and the checkpoint to resume a reclaimed trial from, with its history caught
        up everywhere.

        The checkpoint is the one matching the store's ``epochs_done`` (:mod:`worker.resume`): this machine's, or
        the copy synced to the MLflow run where this machine has none as recent (its worker ran elsewhere). One
        that cannot be read is set aside and the next is tried; with none the trial starts again from epoch 1.
        The dead worker may have written ``last.pt`` for an epoch it never reported: those epochs are reported
        now, so MLflow's and Optuna's histories stay continuous; epochs MLflow has are never logged again.
        """
        claim, tracker, lease = ctx.claim, self.backends.tracker, ctx.keeper
        if not claim.resuming:
            shutil.rmtree(trial_dir, ignore_errors=True)  # leftovers of an unrelated earlier run
            return None, resume.new_attempt(trial_dir)
        workdir = resume.new_attempt(trial_dir)
        done = claim.epochs_done
        found = resume.choose(resume.local(trial_dir, exclude=workdir), done)
        if found is None or found.epoch < done:
            synced = self._synced_checkpoint(ctx, trial_dir)
            if synced is not None:
                found = resume.choose([f for f in (found, synced) if f is not None], done)
        resume.keep_only(trial_dir, {workdir} | ({found.folder} if found is not None else set()))
        # Epoch metrics reach MLflow from a background thread, so a worker killed right after an epoch may have
        # recorded it in the store but not in MLflow: MLflow is caught up by its own history, not the store's.
        tracker.flush(timeout=60)
        ctx.logged = tracker.logged_steps(ctx.run_id, ctx.spec.metric, default=range(1, done + 1))
        lease.confirm()
        if found is None:
            log.warning("trial %s: no readable checkpoint of its %d epoch(s); starting it again from epoch 1",
                        claim.number, done)
            tracker.mark_resumed(ctx.run_id, 0)
            return None, workdir
        resume.carry_best(found, workdir)
        for row in found.state.get("history", []):
            epoch = int(row["epoch"])
            metrics = {k: float(v) for k, v in row.items() if k != "epoch"}
            value = ctx.record(epoch, metrics)
            if epoch not in ctx.logged:
                tracker.log_epoch(ctx.run_id, epoch, metrics, guard=lease.holds)
                ctx.logged.add(epoch)
            if value is not None and value == value and not ctx.spec.multi_objective:
                self._report(ctx, float(value), epoch)
        tracker.mark_resumed(ctx.run_id, found.epoch)
        log.info("trial %s resumes from its epoch-%s checkpoint (%s; the store has %d epoch(s))", claim.number,
                 found.epoch, found.path, done)
        return found.path, workdir

    def _synced_checkpoint(self, ctx: TrialContext, trial_dir: Path) -> resume.Found | None:
        """The ``last.pt`` synced to the trial's MLflow run, if it has a readable one; MLflow unreachable is raised."""
        folder = resume.new_attempt(trial_dir, tag="-mlflow")
        fetched = self.backends.tracker.download_checkpoint(ctx.run_id, resume.LAST, folder)
        if fetched is None:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        path = fetched.replace(folder / resume.LAST)
        state = resume.read_or_set_aside(path, trial_dir)
        if state is None:
            return None
        log.info("trial %s: fetched its epoch-%s checkpoint from MLflow run %s", ctx.claim.number, state["epoch"],
                 ctx.run_id)
        return resume.Found(path, state)

    # -- the whole trial --------------------------------------------------------------------------------

    def run(self, claim: queue.Claim) -> TrialState | None:
        """Run one claimed trial; returns its final state, or None if it went back to the queue (or was taken).

        Nothing it raises escapes: whatever fails (starting, resuming, training, the final uploads) ends up in
        the trial's error, the trial requeued (infrastructure, while attempts remain) or failed with it.
        """
        started = Started()
        with LeaseKeeper(self.backends.sessions, claim, self.worker_id, self.settings) as lease:
            try:
                return self._run(claim, lease, started)
            except TrialStopped:  # a write outside training found the trial taken (this worker stalled past its lease)
                log.warning("trial %s: lease lost; leaving it to its new owner", claim.number)
                return None
            except Exception as exc:
                return self._abandon(claim, started, exc)

    def _run(self, claim: queue.Claim, lease: LeaseKeeper, started: Started) -> TrialState | None:
        try:
            ctx = self._start(claim, started)
        except TrialStopped:
            log.warning("trial %s: lease lost while starting; leaving it to its new owner", claim.number)
            return None
        ctx.lease = lease
        started.context = ctx
        if self.settings.system_metrics_seconds > 0:
            self.backends.tracker.start_system_metrics(ctx.run_id, self.settings.system_metrics_seconds)
        try:
            return self._train(claim, ctx, lease)
        finally:  # ended, or back to the queue: its system metrics stop with this attempt
            self.backends.tracker.stop_system_metrics(ctx.run_id)

    def _train(self, claim: queue.Claim, ctx: TrialContext, lease: LeaseKeeper) -> TrialState | None:
        resume_from, workdir = self._resume_point(ctx, self._workdir(claim))
        job = TrainingJob(
            claim=claim, spec=ctx.spec, device=self.device, workdir=workdir, resume=resume_from,
            epochs_done=ctx.epochs_done, on_epoch=lambda report: self._on_epoch(ctx, report),
            stop=lambda: ctx.stop_reason is not None or self.shutdown.is_set(), guard=lease.confirm,
        )
        try:
            result = self.train(job)
        except TrialPruned as exc:
            return self._finish(ctx, TrialState.pruned, metrics=history_summary(ctx.history), error=exc.reason)
        except TrialStopped as exc:
            reason = ctx.stop_reason or (StopReason.shutdown if self.shutdown.is_set() else exc.reason)
            return self._stopped(ctx, reason)
        except Exception as exc:
            log.exception("trial %s of sweep %s failed", claim.number, claim.sweep_id)
            if self.retry.classify(exc, claim.attempts) is Outcome.requeue:
                reason = describe(exc)
                self._db(lambda: queue.release(self.backends.sessions, claim.row_id, self.worker_id,
                                               epochs_done=ctx.epochs_done, reason=reason, count_attempt=True),
                         "releasing the trial")
                return None
            state = self._finish(ctx, TrialState.failed, error=describe(exc))
            if isinstance(exc, DataNotFoundError) and state is TrialState.failed:
                self._fail_same_data(ctx, describe(exc))
            return state
        # Each upload and the summary only while the trial is still ours: a worker stalled past its lease after its
        # last epoch, then continued, must not upload or log a second time what the trial's new owner did.
        tracker = self.backends.tracker
        lease.confirm()
        tracker.log_artifacts(ctx.run_id, {"plots": workdir / "plots"})
        for path in result.checkpoints.values():
            lease.confirm()
            tracker.log_artifacts(ctx.run_id, {"checkpoints": Path(path)})
        summary = {k: v for k, v in result.summary.items() if isinstance(v, (int, float))}
        lease.confirm()
        tracker.log_summary(ctx.run_id, summary, step=ctx.epochs_done)
        if result.model is not None:
            lease.confirm()
            self._log_model(ctx, result.model)
        return self._finish(ctx, TrialState.completed, value=ctx.best, metrics=summary)

    def _log_model(self, ctx: TrialContext, model: torch.nn.Module) -> None:
        """The best checkpoint as an MLflow PyTorch model (on the CPU, the model zoo's code with it); a failure
        costs the trial nothing, its checkpoints are logged already."""
        import vitmodels

        ds = ctx.spec.dataset
        try:
            uri = self.backends.tracker.log_model(
                ctx.run_id, model.to("cpu"), torch.zeros(1, ds.in_chans, ds.img_size, ds.img_size),
                code_paths=[str(Path(vitmodels.__file__).parent)],
            )
            log.info("trial %s: best checkpoint logged as %s", ctx.claim.number, uri)
        except Exception:
            log.warning("trial %s: could not log its model to MLflow run %s", ctx.claim.number, ctx.run_id,
                        exc_info=True)

    # -- endings ----------------------------------------------------------------------------------------

    def _finish(
        self, ctx: TrialContext, state: TrialState, *, value: float | None = None,
        metrics: dict[str, Any] | None = None, error: str | None = None,
    ) -> TrialState | None:
        # A multi-objective trial tells Optuna every objective; the store keeps the first as its value.
        told = None
        if state is TrialState.completed and ctx.spec.multi_objective:
            told = objective_values(ctx.spec.objectives, ctx.spec.directions, ctx.history, metrics or {})
            if told is not None:
                metrics = {**(metrics or {}), "objectives": dict(zip(ctx.spec.objectives, told, strict=True))}
        written, sweep_state = self._db(lambda: queue.finish(
            self.backends.sessions, ctx.claim.row_id, self.worker_id, state, value=value if value is not None else ctx.best,
            metrics=metrics, error=error, epochs_done=ctx.epochs_done,
        ), "writing the trial's result")
        if not written:  # the lease was lost meanwhile: another worker owns the trial now
            log.warning("trial %s: lease lost before its result could be written", ctx.claim.number)
            return None
        self._db(lambda: sweeps.close_trial(
            self.backends, optuna_trial_id=ctx.optuna_trial_id, run_id=ctx.run_id, state=state, error=error,
            values=told if told is not None else value,
        ), "closing the trial in Optuna and MLflow")
        if sweep_state is SweepState.completed:
            sweeps.close_sweep_run(self.backends, ctx.claim.sweep_id)
        return state

    def _fail_same_data(self, ctx: TrialContext, error: str) -> None:
        """This trial's data (dataset files or pretrained weights) is missing: fail the sweep's queued trials that
        read the same files at once with that reason, instead of running each into the same error. Those are
        all of them when the sweep varies neither its dataset nor its weights; otherwise a grid's trials whose
        point names the same ones (a search's trials have no values before they start: they are left to run)."""
        claim, sessions = ctx.claim, self.backends.sessions
        base = ExperimentSpec.model_validate(claim.spec)
        key = _data_key(ctx.spec)
        varies = any(p in ("dataset", "dataset.name", "model", "model.pretrained") or p.startswith("dataset.options")
                     for p in base.searched_paths())  # what changes the files a trial reads (not its img_size)
        queued = self._db(lambda: sweeps.list_trials(sessions, claim.sweep_id, state=TrialState.queued),
                          "listing the sweep's queued trials")
        same = [t.id for t in queued
                if not varies or (t.params is not None and _data_key(base.resolve(t.params)) == key)]
        reason = f"not run: trial {claim.number} found its data missing ({error})"
        started, sweep_state = self._db(lambda: queue.fail_queued(sessions, claim.sweep_id, same, reason),
                                        "failing the trials of the missing data")
        if same:
            log.warning("sweep %s: %d queued trial(s) failed with trial %s: its data is missing", claim.sweep_id,
                        len(same), claim.number)
        for ended in started:  # handed back after they had started: their Optuna trial and MLflow run end too
            self._db(partial(sweeps.close_trial, self.backends, optuna_trial_id=ended.optuna_trial_id,
                             run_id=ended.mlflow_run_id, state=TrialState.failed, error=reason),
                     "closing the trial in Optuna and MLflow")
        if sweep_state is SweepState.completed:
            sweeps.close_sweep_run(self.backends, claim.sweep_id)

    def _stopped(self, ctx: TrialContext, reason: StopReason | str) -> TrialState | None:
        if reason == StopReason.lease_lost:
            log.warning("trial %s: lease lost; leaving it to its new owner", ctx.claim.number)
            return None
        if reason == StopReason.shutdown:
            self._db(lambda: queue.release(self.backends.sessions, ctx.claim.row_id, self.worker_id,
                                           epochs_done=ctx.epochs_done,
                                           reason="worker shut down; will resume from its checkpoint"),
                     "releasing the trial")
            return None
        return self._finish(ctx, TrialState.cancelled, error=str(reason.value if isinstance(reason, StopReason) else reason))

    def _abandon(self, claim: queue.Claim, started: Started, exc: Exception) -> TrialState | None:
        """Something outside training failed (starting, resuming, the final uploads): requeue the trial
        (infrastructure, such as MLflow or the database away; a retry reuses what was made so far) or fail it with
        the reason, together with its Optuna trial and MLflow run if it had them. The reason is the real one, never
        a "worker lost" the lease would have said after the slot crashed."""
        log.exception("trial %s of sweep %s: %s", claim.number, claim.sweep_id,
                      "could not start" if started.context is None else "failed outside training")
        error = describe(exc)
        epochs_done = started.context.epochs_done if started.context is not None else claim.epochs_done
        if self.retry.classify(exc, claim.attempts) is Outcome.requeue:
            self._db(lambda: queue.release(self.backends.sessions, claim.row_id, self.worker_id,
                                           epochs_done=epochs_done, reason=error, count_attempt=True),
                     "releasing the trial")
            return None
        written, sweep_state = self._db(lambda: queue.finish(
            self.backends.sessions, claim.row_id, self.worker_id, TrialState.failed, error=error,
            epochs_done=epochs_done,
        ), "failing the trial")
        if not written:
            return None
        try:  # the store has the failure; MLflow (maybe the very thing that failed) is told if it can be
            self._db(lambda: sweeps.close_trial(self.backends, optuna_trial_id=started.optuna_trial_id,
                                                run_id=started.run_id, state=TrialState.failed, error=error),
                     "closing the trial in Optuna and MLflow")
            if sweep_state is SweepState.completed:
                sweeps.close_sweep_run(self.backends, claim.sweep_id)
        except Exception:
            log.warning("trial %s failed (%s) but could not be closed in Optuna or MLflow", claim.number, error,
                        exc_info=True)
        return TrialState.failed


def _data_key(spec: ExperimentSpec) -> str:
    """What a trial reads from the data directory: its dataset (name and options) and pretrained weights."""
    import json

    return json.dumps([spec.dataset.name, spec.dataset.options, spec.model.pretrained], sort_keys=True, default=str)
