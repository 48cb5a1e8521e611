"""The trial queue, kept in the ``sweep_trials`` table.

A claim is one atomic ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` on
PostgreSQL; on SQLite the same statement runs in a ``BEGIN IMMEDIATE`` transaction, so one writer at a
time. A claimed trial carries a lease that its worker renews by heartbeat; an expired lease sends the trial
back to the queue (or fails it once it has used up its attempts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Result, and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from server.core.db import write_session
from server.core.models import StopReason, Sweep, SweepState, Trial, TrialState, utcnow


@dataclass(frozen=True)
class Claim:
    """A trial handed to one worker. ``row_id`` is the store's row (``sweep_trials.id``); Optuna's own trial id
    is ``optuna_trial_id``."""

    row_id: int
    sweep_id: int
    number: int
    attempts: int
    params: dict[str, Any] | None
    slug: str | None
    optuna_trial_id: int | None
    optuna_trial_number: int | None
    mlflow_run_id: str | None
    epochs_done: int
    sweep_name: str
    spec: dict[str, Any]
    study_name: str
    parent_run_id: str | None

    @property
    def resuming(self) -> bool:
        """The trial started once (it has its MLflow run): pick it up where its last worker left it."""
        return self.mlflow_run_id is not None


@dataclass(frozen=True)
class Ended:
    """A trial the queue ended on its own (lease lost for good, sweep deadline): what must be closed with it in
    Optuna and MLflow (see ``sweeps.close_trial``)."""

    row_id: int
    optuna_trial_id: int | None
    mlflow_run_id: str | None
    state: TrialState
    error: str


def reap_expired(sessions: sessionmaker[Session], max_attempts: int) -> list[Ended]:
    """Requeue running trials whose lease ran out; fail those that used up their attempts."""
    now = utcnow()
    expired = and_(Trial.state == TrialState.running, Trial.lease_expires_at < now)
    error = f"worker lost {max_attempts} times (lease expired); giving up"
    with write_session(sessions) as session:
        session.execute(
            update(Trial)
            .where(expired, Trial.attempts < max_attempts)
            .values(state=TrialState.queued, worker_id=None, lease_expires_at=None, error="lease expired; requeued")
        )
        failed = session.execute(
            update(Trial)
            .where(expired, Trial.attempts >= max_attempts)
            .values(
                state=TrialState.failed,
                lease_expires_at=None,
                finished_at=now,
                error=error,
            )
            .returning(Trial.id, Trial.optuna_trial_id, Trial.mlflow_run_id, Trial.sweep_id)
        ).all()
        for row in failed:
            _maybe_finish_sweep(session, row.sweep_id)
    return [Ended(r.id, r.optuna_trial_id, r.mlflow_run_id, TrialState.failed, error) for r in failed]


@dataclass(frozen=True)
class Deadlines:
    """What ``expire_deadlines`` did: trials it cancelled that had started once (their Optuna trial and MLflow
    run need closing too), and sweeps it ended (their MLflow parent run needs closing)."""

    cancelled: list[Ended]
    ended_sweeps: list[int]


def expire_deadlines(sessions: sessionmaker[Session]) -> Deadlines:
    """Cancel the queued trials of running or paused sweeps past their deadline (``search.timeout``); end such
    sweeps once nothing of theirs runs. Running trials finish, and the last one to finish ends its sweep."""
    now = utcnow()
    error = "the sweep's timeout passed before this trial ran"
    due = select(Sweep.id).where(Sweep.deadline < now, Sweep.state.in_([SweepState.running, SweepState.paused]))
    with sessions() as session:  # a plain read first: nearly always nothing is due, and then nothing is written
        if not session.scalars(due.limit(1)).first():
            return Deadlines([], [])
    with write_session(sessions) as session:
        sweep_ids = list(session.scalars(due))
        cancelled = session.execute(
            update(Trial)
            .where(Trial.sweep_id.in_(sweep_ids), Trial.state == TrialState.queued)
            .values(state=TrialState.cancelled, finished_at=now, lease_expires_at=None, worker_id=None,
                    error=error)
            .returning(Trial.id, Trial.optuna_trial_id, Trial.mlflow_run_id)
        ).all()
        ended = [i for i in sweep_ids if _maybe_finish_sweep(session, i) is SweepState.completed]
    started = [Ended(r.id, r.optuna_trial_id, r.mlflow_run_id, TrialState.cancelled, error)
               for r in cancelled if r.optuna_trial_id is not None]
    return Deadlines(started, ended)


def fail_queued(
    sessions: sessionmaker[Session], sweep_id: int, row_ids: Sequence[int], error: str
) -> tuple[list[Ended], SweepState | None]:
    """Fail those of ``row_ids`` (trials of ``sweep_id``) still queued, with ``error``: they would fail the same
    way (their data is missing). Returns the ones that had started once (their Optuna trial and MLflow run need
    closing) and the sweep's new state if this ended it."""
    if not row_ids:
        return [], None
    with write_session(sessions) as session:
        failed = session.execute(
            update(Trial)
            .where(Trial.sweep_id == sweep_id, Trial.id.in_(list(row_ids)), Trial.state == TrialState.queued)
            .values(state=TrialState.failed, finished_at=utcnow(), lease_expires_at=None, worker_id=None, error=error)
            .returning(Trial.id, Trial.optuna_trial_id, Trial.mlflow_run_id)
        ).all()
        state = _maybe_finish_sweep(session, sweep_id)
    return [Ended(r.id, r.optuna_trial_id, r.mlflow_run_id, TrialState.failed, error) for r in failed
            if r.optuna_trial_id is not None], state


def claim(sessions: sessionmaker[Session], worker_id: str, device: str, lease_seconds: float) -> Claim | None:
    """Atomically take the oldest queued trial of a running sweep, or return None.

    Sweeps past their deadline are skipped (``expire_deadlines`` cancels their queued trials), and so are
    sweeps with ``max_concurrent`` trials running. Counting running trials under ``SKIP LOCKED`` alone would
    race on PostgreSQL (two claimers each count before the other commits), so the rows of the running limited
    sweeps are locked first, in id order: a claimer in a limited sweep waits for the one before it to commit,
    and its claim statement's snapshot, taken after that, sees the other's trial running. Unlimited sweeps
    take no such lock and are claimed in parallel. On SQLite the write transaction already excludes every
    other writer. The claim itself stays one statement.
    """
    now = utcnow()
    running = aliased(Trial)
    n_running = (
        select(func.count())
        .select_from(running)
        .where(running.sweep_id == Sweep.id, running.state == TrialState.running)
        .scalar_subquery()
    )
    with write_session(sessions) as session:
        limited = session.scalars(
            select(Sweep.id)
            .where(Sweep.state == SweepState.running, Sweep.max_concurrent.is_not(None))
            .order_by(Sweep.id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: inserting trials (FK checks) is not blocked
        ).all()
        candidate = (
            select(Trial.id)
            .join(Sweep, Sweep.id == Trial.sweep_id)
            .where(
                Trial.state == TrialState.queued,
                Sweep.state == SweepState.running,
                or_(Sweep.deadline.is_(None), Sweep.deadline > now),
                or_(Sweep.max_concurrent.is_(None), and_(Sweep.id.in_(limited), n_running < Sweep.max_concurrent)),
            )
            .order_by(Trial.sweep_id, Trial.number)
            .limit(1)
            .with_for_update(skip_locked=True, of=Trial)
            .scalar_subquery()
        )
        row = session.execute(
            update(Trial)
            .where(Trial.id == candidate, Trial.state == TrialState.queued)
            .values(
                state=TrialState.running,
                worker_id=worker_id,
                device=device,
                attempts=Trial.attempts + 1,
                started_at=func.coalesce(Trial.started_at, now),
                heartbeat_at=now,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                error=None,
            )
            .returning(Trial.id)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if row is None:
            return None
        trial = session.get_one(Trial, row, populate_existing=True)
        sweep = trial.sweep
        return Claim(
            row_id=trial.id,
            sweep_id=sweep.id,
            number=trial.number,
            attempts=trial.attempts,
            params=trial.params,
            slug=trial.slug,
            optuna_trial_id=trial.optuna_trial_id,
            optuna_trial_number=trial.optuna_trial_number,
            mlflow_run_id=trial.mlflow_run_id,
            epochs_done=trial.epochs_done,
            sweep_name=sweep.name,
            spec=sweep.spec,
            study_name=sweep.study_name or "",
            parent_run_id=sweep.mlflow_run_id,
        )


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE matched (``Session.execute`` is typed as returning a plain ``Result``)."""
    return cast(CursorResult[Any], result).rowcount


def _update_owned(session: Session, row_id: int, owner: str, values: dict[str, Any]) -> bool:
    """Update a trial's row only while ``owner`` holds it running; False if the lease was lost meanwhile.

    Every write a worker makes to its trial goes through here: a worker that lost its trial writes nothing.
    """
    owned = and_(Trial.id == row_id, Trial.worker_id == owner, Trial.state == TrialState.running)
    return _rowcount(session.execute(update(Trial).where(owned).values(**values))) == 1


def _owned_write(sessions: sessionmaker[Session], row_id: int, owner: str, values: dict[str, Any]) -> bool:
    """:func:`_update_owned` in a transaction of its own."""
    with write_session(sessions) as session:
        return _update_owned(session, row_id, owner, values)


def bind(
    sessions: sessionmaker[Session], row_id: int, worker_id: str, *, optuna_trial_id: int, optuna_trial_number: int,
) -> bool:
    """Record a claimed trial's Optuna trial as soon as it exists, so a retry or a re-claim reuses it."""
    return _owned_write(sessions, row_id, worker_id,
                        {"optuna_trial_id": optuna_trial_id, "optuna_trial_number": optuna_trial_number})


def attach(sessions: sessionmaker[Session], row_id: int, worker_id: str, *, params: dict[str, Any], mlflow_run_id: str) -> bool:
    """Record a claimed trial's parameters and MLflow run: from here on a re-claim resumes it."""
    return _owned_write(sessions, row_id, worker_id, {"params": params, "mlflow_run_id": mlflow_run_id})


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learns: whether the lease is still ours, and whether the trial must stop."""

    owned: bool
    stop_reason: StopReason | None = None


def heartbeat(
    sessions: sessionmaker[Session], row_id: int, worker_id: str, lease_seconds: float, *,
    epochs_done: int | None = None, value: float | None = None,
) -> Beat:
    """Renew the lease (and record progress); says whether the trial is still ours and its sweep still wants it."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now, "lease_expires_at": now + timedelta(seconds=lease_seconds)}
    if epochs_done is not None:
        values["epochs_done"] = epochs_done
    if value is not None:
        values["value"] = value
    with write_session(sessions) as session:
        if not _update_owned(session, row_id, worker_id, values):
            return Beat(owned=False, stop_reason=StopReason.lease_lost)
        state = session.scalar(select(Sweep.state).join(Trial, Trial.sweep_id == Sweep.id).where(Trial.id == row_id))
        if state == SweepState.cancelled:
            return Beat(owned=True, stop_reason=StopReason.cancelled)
        return Beat(owned=True)


def finish(
    sessions: sessionmaker[Session], row_id: int, worker_id: str, state: TrialState, *,
    value: float | None = None, metrics: dict[str, Any] | None = None, error: str | None = None,
    epochs_done: int | None = None,
) -> tuple[bool, SweepState | None]:
    """Write a trial's outcome; returns (written, new sweep state if this finished the sweep)."""
    assert state.finished, state
    values: dict[str, Any] = {"state": state, "finished_at": utcnow(), "lease_expires_at": None, "error": error}
    if value is not None:
        values["value"] = value
    if metrics is not None:
        values["metrics"] = metrics
    if epochs_done is not None:
        values["epochs_done"] = epochs_done
    with write_session(sessions) as session:
        if not _update_owned(session, row_id, worker_id, values):
            return False, None
        sweep_id = session.scalar(select(Trial.sweep_id).where(Trial.id == row_id))
        assert sweep_id is not None
        return True, _maybe_finish_sweep(session, sweep_id)


def release(
    sessions: sessionmaker[Session], row_id: int, worker_id: str, *, epochs_done: int, reason: str,
    count_attempt: bool = False,
) -> bool:
    """Give a running trial back to the queue; it will resume from its checkpoint. A graceful shutdown is not
    one of its attempts; a failure that may not repeat (``count_attempt``: MLflow or the database away) is, so
    one that does repeat fails the trial once its attempts are spent instead of requeueing it for ever."""
    return _owned_write(sessions, row_id, worker_id, {
        "state": TrialState.queued, "worker_id": None, "lease_expires_at": None, "epochs_done": epochs_done,
        "attempts": Trial.attempts if count_attempt else Trial.attempts - 1, "error": reason,
    })


def _maybe_finish_sweep(session: Session, sweep_id: int) -> SweepState | None:
    """Mark a running or paused sweep completed once none of its trials is queued or running."""
    open_trials = session.scalar(
        select(func.count()).where(Trial.sweep_id == sweep_id, Trial.state.in_([TrialState.queued, TrialState.running]))
    )
    if open_trials:
        return None
    result = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.state.in_([SweepState.running, SweepState.paused]))
        .values(state=SweepState.completed, finished_at=utcnow())
    )
    return SweepState.completed if _rowcount(result) == 1 else None
