"""SQLAlchemy models of the sweep store. The ``sweep_trials`` table is also the work queue.

Optuna keeps its own tables (``studies``, ``trials``, ...) in the same database, so ours are named apart.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones: store naive UTC, return aware)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; use timezone-aware UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class SweepState(str, enum.Enum):
    pending = "pending"  # row written, study being created; invisible to workers
    running = "running"
    paused = "paused"
    completed = "completed"
    cancelled = "cancelled"
    failed = "failed"


class TrialState(str, enum.Enum):
    queued = "queued"
    running = "running"
    completed = "completed"
    pruned = "pruned"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (TrialState.queued, TrialState.running)


FINISHED_SWEEP_STATES = [SweepState.completed, SweepState.cancelled, SweepState.failed]


class StopReason(str, enum.Enum):
    """Why a running trial must stop before its budget is spent (heard from the store or the process)."""

    lease_lost = "lease lost"  # another worker owns the trial now: write nothing more
    cancelled = "sweep cancelled"  # the trial ends cancelled
    shutdown = "worker shutting down"  # the trial goes back to the queue and resumes from its checkpoint


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Plain VARCHAR + CHECK rather than a native PostgreSQL ENUM: adding a state later is a one-line migration.
    return Enum(cls, name=name, native_enum=False, length=16, validate_strings=True)


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    state: Mapped[SweepState] = mapped_column(_enum(SweepState, "sweep_state"), index=True, default=SweepState.pending)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    n_trials: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(256))
    dataset: Mapped[str] = mapped_column(String(256))
    study_name: Mapped[str | None] = mapped_column(String(256), unique=True)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    max_concurrent: Mapped[int | None] = mapped_column(Integer, doc="At most this many trials run at once.")
    deadline: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), doc="Submission + search.timeout: queued trials are cancelled from then on."
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    trials: Mapped[list[Trial]] = relationship(
        back_populates="sweep", cascade="all, delete-orphan", passive_deletes=True, order_by="Trial.number"
    )


class Trial(Base):
    __tablename__ = "sweep_trials"
    __table_args__ = (
        UniqueConstraint("sweep_id", "number", name="uq_sweep_trials_sweep_number"),
        Index("ix_sweep_trials_queue", "state", "sweep_id", "number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer, doc="Position in the sweep, 0-based.")
    slug: Mapped[str | None] = mapped_column(String(256))
    state: Mapped[TrialState] = mapped_column(_enum(TrialState, "trial_state"), default=TrialState.queued)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), doc="Dotted path -> value; fixed for grids.")
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    optuna_trial_number: Mapped[int | None] = mapped_column(Integer)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[str | None] = mapped_column(String(256))
    device: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[float | None] = mapped_column(Float, doc="The sweep's objective, best over epochs.")
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), doc="Final figures: accuracies, resources.")
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    sweep: Mapped[Sweep] = relationship(back_populates="trials")
