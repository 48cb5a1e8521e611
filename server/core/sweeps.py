"""Sweeps and the ends of trials: create (with the Optuna study and MLflow run), read, control, close.

Plain functions taking a session factory or the backends; the API and the worker both call these. Whatever
ends a trial (its worker, the lease reaper, a deadline, a cancel) closes it in Optuna and MLflow through
:func:`close_trial`, and whatever ends a sweep closes its MLflow run through :func:`close_sweep_run`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, case, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from server.core import queue, studies
from server.core.backends import Backends
from server.core.db import write_session
from server.core.exceptions import BackendError, ConflictError, NotFoundError
from server.core.models import FINISHED_SWEEP_STATES, StopReason, Sweep, SweepState, Trial, TrialState, utcnow
from server.core.objectives import Direction, pareto_front, sign
from server.core.spec import MAX_TRIALS, ExperimentSpec, slug

log = logging.getLogger(__name__)


def create_sweep(backends: Backends, spec: ExperimentSpec, *, user: str | None = None) -> Sweep:
    """Store the sweep and its queued trials, create its Optuna study and MLflow parent run, then open it.

    ``user``: who submitted it, where the client says (the MLflow user of its runs).

    The row is written first as ``pending`` (invisible to workers); if Optuna or MLflow fail, it is deleted
    again, so a failed submission leaves nothing behind.
    """
    spec_json = spec.model_dump(mode="json")
    points = spec.grid_points() if spec.is_grid else [None] * spec.planned_trials()
    with write_session(backends.sessions) as session:
        sweep = Sweep(
            name=spec.name,
            state=SweepState.pending,
            spec=spec_json,
            metric=spec.metric,
            direction=spec.direction,
            n_trials=len(points),
            model=spec.model.name,
            dataset=spec.dataset.name,
            max_concurrent=spec.max_concurrent_trials,
        )
        session.add(sweep)
        session.flush()
        # One bulk INSERT (executemany), not an ORM object per trial: a 10,000-point grid is stored in a fraction
        # of the time, holding the interpreter (and the API's other threads) that much less.
        session.execute(insert(Trial), [
            {"sweep_id": sweep.id, "number": i, "params": p, "slug": slug(p) if p else None,
             "state": TrialState.queued}
            for i, p in enumerate(points)
        ])
        sweep_id = sweep.id
    name = studies.study_name(sweep_id, spec.name)
    try:
        studies.create_study(backends.storage, name, spec, sweep_id)
        run_id = backends.tracker.start_sweep(sweep_id, spec.name, spec_json, name, user=user)
    except Exception as exc:
        log.exception("creating the study or MLflow run of sweep %s failed; removing it", sweep_id)
        studies.delete_study(backends.storage, name)
        with write_session(backends.sessions) as session:
            session.execute(delete(Trial).where(Trial.sweep_id == sweep_id))
            session.execute(delete(Sweep).where(Sweep.id == sweep_id))
        raise BackendError(f"could not create the sweep's study or tracking run: {exc}") from exc
    with write_session(backends.sessions) as session:
        sweep = session.get_one(Sweep, sweep_id)
        sweep.study_name = name
        sweep.mlflow_run_id = run_id
        sweep.mlflow_experiment_id = backends.tracker.experiment_id
        sweep.state = SweepState.running
        if spec.timeout is not None:  # the clock starts when workers can first claim its trials
            sweep.deadline = utcnow() + timedelta(seconds=spec.timeout)
    return sweep


def add_trials(backends: Backends, sweep_id: int, n: int) -> SweepView:
    """Queue ``n`` more trials of a search. A completed sweep opens again (running); a paused one stays paused.

    A sweep whose timeout has passed gets a fresh one from now. Grids are fixed (ConflictError), and so are
    cancelled and failed sweeps.
    """
    with write_session(backends.sessions) as session:
        # Lock the row: two concurrent additions must not number their trials alike.
        sweep = session.scalar(_visible().where(Sweep.id == sweep_id).with_for_update())
        if sweep is None:
            raise NotFoundError("sweep", sweep_id)
        spec = ExperimentSpec.model_validate(sweep.spec)
        if spec.is_grid:
            raise ConflictError(f"sweep {sweep_id} is a grid: its {sweep.n_trials} trials are fixed; submit another sweep")
        if sweep.state in (SweepState.cancelled, SweepState.failed):
            raise ConflictError(f"sweep {sweep_id} is {sweep.state.value}; only running, paused or completed sweeps take trials")
        if sweep.n_trials + n > MAX_TRIALS:
            raise ConflictError(f"sweep {sweep_id} has {sweep.n_trials} trials; at most {MAX_TRIALS} in all")
        last = session.scalar(select(func.max(Trial.number)).where(Trial.sweep_id == sweep_id))
        first = 0 if last is None else last + 1
        session.add_all(Trial(sweep_id=sweep_id, number=first + i, state=TrialState.queued) for i in range(n))
        sweep.n_trials += n
        now = utcnow()
        if spec.timeout is not None and sweep.deadline is not None and sweep.deadline <= now:
            sweep.deadline = now + timedelta(seconds=spec.timeout)
        reopened = sweep.state == SweepState.completed
        if reopened:
            sweep.state = SweepState.running
            sweep.finished_at = None
        run_id = sweep.mlflow_run_id
    if reopened and run_id:
        try:
            backends.tracker.reopen_sweep(run_id, SweepState.running.value)
        except Exception:  # MLflow being down must not undo the addition; the run is closed again at the end
            log.exception("could not reopen the MLflow run of sweep %s", sweep_id)
    return get_sweep(backends.sessions, sweep_id)


def close_sweep_run(backends: Backends, sweep_id: int) -> None:
    """Finish the MLflow parent run of a sweep that has just ended, with its state and best value."""
    view = get_sweep(backends.sessions, sweep_id)
    if not view.sweep.mlflow_run_id:
        return
    best = {view.sweep.metric: view.best.value} if view.best is not None and view.best.value is not None else {}
    backends.tracker.finish_sweep(view.sweep.mlflow_run_id, view.sweep.state.value, best)


def close_trial(
    backends: Backends, *, optuna_trial_id: int | None, run_id: str | None, state: TrialState,
    error: str | None = None, values: float | Sequence[float] | None = None,
) -> None:
    """Close an ended trial in Optuna (told its state, and its values when completed) and in MLflow (its run
    ended with the state and error). Safe to repeat: a trial already finished in Optuna is left as it is."""
    assert state.finished, state
    if optuna_trial_id is not None:
        studies.tell(backends.storage, optuna_trial_id, state, values)
    if run_id:
        backends.tracker.finish_trial(run_id, state.value, error)


def reap_expired(backends: Backends, max_attempts: int) -> list[queue.Ended]:
    """Requeue trials of dead workers; fail (and close) the ones out of attempts."""
    reaped = queue.reap_expired(backends.sessions, max_attempts)
    for ended in reaped:
        close_trial(backends, optuna_trial_id=ended.optuna_trial_id, run_id=ended.mlflow_run_id, state=ended.state,
                    error=ended.error)
    return reaped


def expire_deadlines(backends: Backends) -> queue.Deadlines:
    """Sweeps past their timeout: cancel their queued trials, close those that had started, and close the MLflow
    runs of the sweeps that ended."""
    done = queue.expire_deadlines(backends.sessions)
    for ended in done.cancelled:  # trials handed back after they had started (shutdown, lost lease)
        close_trial(backends, optuna_trial_id=ended.optuna_trial_id, run_id=ended.mlflow_run_id, state=ended.state,
                    error=ended.error)
    for sweep_id in done.ended_sweeps:
        close_sweep_run(backends, sweep_id)
    return done


@dataclass
class SweepView:
    """A sweep with its trial counts by state and its best trial: the one best on the first objective (for
    several objectives, ``pareto`` holds the completed trials no other trial beats on every objective)."""

    sweep: Sweep
    counts: dict[str, int] = field(default_factory=dict)
    best: Trial | None = None
    pareto: list[Trial] | None = None


def _visible() -> Select[Any]:
    return select(Sweep).where(Sweep.state != SweepState.pending)


def list_sweeps(
    sessions: sessionmaker[Session], *, state: SweepState | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[SweepView], int]:
    with sessions() as session:
        query = _visible()
        if state is not None:
            query = query.where(Sweep.state == state)
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        sweeps = list(session.scalars(query.order_by(Sweep.id.desc()).limit(limit).offset(offset)))
        counts = _counts(session, [s.id for s in sweeps])
        best, pareto = _best(session, sweeps), _pareto(session, sweeps)
        return [SweepView(s, counts.get(s.id, {}), best.get(s.id), pareto.get(s.id)) for s in sweeps], total


def get_sweep(sessions: sessionmaker[Session], sweep_id: int) -> SweepView:
    with sessions() as session:
        sweep = session.scalar(_visible().where(Sweep.id == sweep_id))
        if sweep is None:
            raise NotFoundError("sweep", sweep_id)
        counts = _counts(session, [sweep_id]).get(sweep_id, {})
        return SweepView(sweep, counts, _best(session, [sweep]).get(sweep_id), _pareto(session, [sweep]).get(sweep_id))


def _counts(session: Session, sweep_ids: list[int]) -> dict[int, dict[str, int]]:
    if not sweep_ids:
        return {}
    rows = session.execute(
        select(Trial.sweep_id, Trial.state, func.count()).where(Trial.sweep_id.in_(sweep_ids)).group_by(Trial.sweep_id, Trial.state)
    )
    out: dict[int, dict[str, int]] = {i: {s.value: 0 for s in TrialState} for i in sweep_ids}
    for sweep_id, state, n in rows:
        out[sweep_id][TrialState(state).value] = n
    return out


def _best(session: Session, sweeps: Sequence[Sweep]) -> dict[int, Trial]:
    """Each sweep's completed trial best on its first objective (ties: the lower number), in one query."""
    if not sweeps:
        return {}
    ids = [s.id for s in sweeps]
    maximize = [s.id for s in sweeps if sign(s.direction) > 0]  # type: ignore[arg-type]
    # Ascending on this key puts the best first whatever each sweep's direction.
    key = case((Trial.sweep_id.in_(maximize), -Trial.value), else_=Trial.value) if maximize else Trial.value
    rank = func.row_number().over(partition_by=Trial.sweep_id, order_by=(key.asc(), Trial.number)).label("rank")
    ranked = (
        select(Trial.id, rank)
        .where(Trial.sweep_id.in_(ids), Trial.value.is_not(None), Trial.state == TrialState.completed)
        .subquery()
    )
    best = session.scalars(select(Trial).join(ranked, Trial.id == ranked.c.id).where(ranked.c.rank == 1))
    return {t.sweep_id: t for t in best}


def _pareto(session: Session, sweeps: Sequence[Sweep]) -> dict[int, list[Trial]]:
    """The Pareto front of each multi-objective sweep's completed trials, by number (none for one objective)."""
    objectives: dict[int, tuple[list[str], list[Direction]]] = {}
    for sweep in sweeps:
        search = sweep.spec.get("search") or {}
        names, directions = search.get("metrics"), search.get("directions")
        if names and directions:
            objectives[sweep.id] = (names, directions)
    if not objectives:
        return {}
    done = session.scalars(
        select(Trial)
        .where(Trial.sweep_id.in_(list(objectives)), Trial.state == TrialState.completed)
        .order_by(Trial.sweep_id, Trial.number)
    ).all()
    by_sweep: dict[int, dict[int, Trial]] = {i: {} for i in objectives}
    for t in done:
        by_sweep[t.sweep_id][t.number] = t
    fronts: dict[int, list[Trial]] = {}
    for sweep_id, (names, directions) in objectives.items():
        by_number = by_sweep[sweep_id]
        points: dict[int, list[float]] = {}
        for t in by_number.values():
            told = (t.metrics or {}).get("objectives") or {}
            if all(isinstance(told.get(n), (int, float)) for n in names):
                points[t.number] = [float(told[n]) for n in names]
        fronts[sweep_id] = [by_number[n] for n in pareto_front(points, directions)]
    return fronts


def list_trials(sessions: sessionmaker[Session], sweep_id: int, *, state: TrialState | None = None) -> list[Trial]:
    with sessions() as session:
        if session.scalar(_visible().where(Sweep.id == sweep_id)) is None:
            raise NotFoundError("sweep", sweep_id)
        query = select(Trial).where(Trial.sweep_id == sweep_id)
        if state is not None:
            query = query.where(Trial.state == state)
        return list(session.scalars(query.order_by(Trial.number)))


def cancel_sweep(backends: Backends, sweep_id: int) -> SweepView:
    """Cancel a sweep: queued trials are cancelled now; running ones stop at their next epoch boundary."""
    with write_session(backends.sessions) as session:
        sweep = session.scalar(_visible().where(Sweep.id == sweep_id))
        if sweep is None:
            raise NotFoundError("sweep", sweep_id)
        if sweep.state in FINISHED_SWEEP_STATES:
            raise ConflictError(f"sweep {sweep_id} is already {sweep.state.value}")
        now = utcnow()
        cancelled = session.execute(
            update(Trial)
            .where(Trial.sweep_id == sweep_id, Trial.state == TrialState.queued)
            .values(state=TrialState.cancelled, finished_at=now, error=StopReason.cancelled.value)
            .returning(Trial.optuna_trial_id, Trial.mlflow_run_id)
        ).all()
        sweep.state = SweepState.cancelled
        sweep.finished_at = now
        run_id = sweep.mlflow_run_id
    try:  # queued trials handed back after they had started have an Optuna trial (and MLflow run) to close
        for optuna_trial_id, trial_run_id in cancelled:
            close_trial(backends, optuna_trial_id=optuna_trial_id, run_id=trial_run_id, state=TrialState.cancelled,
                        error=StopReason.cancelled.value)
        if run_id:
            backends.tracker.finish_sweep(run_id, "cancelled")
    except Exception:  # Optuna's or MLflow's store being down must not undo a cancel
        log.exception("could not close the Optuna trials and MLflow runs of cancelled sweep %s", sweep_id)
    return get_sweep(backends.sessions, sweep_id)


def set_paused(sessions: sessionmaker[Session], sweep_id: int, paused: bool) -> SweepView:
    """Pause (no new claims; running trials finish) or resume a sweep."""
    with write_session(sessions) as session:
        sweep = session.scalar(_visible().where(Sweep.id == sweep_id))
        if sweep is None:
            raise NotFoundError("sweep", sweep_id)
        want_from, want_to = (SweepState.running, SweepState.paused) if paused else (SweepState.paused, SweepState.running)
        if sweep.state != want_from:
            raise ConflictError(f"sweep {sweep_id} is {sweep.state.value}; only a {want_from.value} sweep can be {'paused' if paused else 'resumed'}")
        sweep.state = want_to
    return get_sweep(sessions, sweep_id)
