"""The three stores a process talks to, created once per process and passed around: the SQL store (sessions),
Optuna's storage (the same database) and the MLflow tracker."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from sqlalchemy.orm import Session, sessionmaker

from server.core import studies
from server.core.config import Settings
from server.core.db import make_engine, make_session_factory, wait_for_connections
from server.core.tracking import Tracker


@dataclass
class Backends:
    """What a process needs to create and run sweeps."""

    sessions: sessionmaker[Session]
    storage: optuna.storages.BaseStorage
    tracker: Tracker

    def dispose(self) -> None:
        """Close the store's pooled connections (Optuna's engine closes with the process)."""
        engine = self.sessions.kw.get("bind")
        if engine is not None:
            engine.dispose()


def make_backends(settings: Settings, *, db_wait: float = 0.0) -> Backends:
    """The store, Optuna storage and MLflow tracker of one process.

    With ``db_wait`` (workers), new connections of the store and of Optuna wait that long for an unreachable
    database instead of failing: a PostgreSQL restart stalls the trial rather than failing it.
    """
    settings.ensure_home()
    engine = make_engine(settings.db_url)
    storage = studies.make_storage(settings.db_url)
    for each in (engine, storage.engine):
        wait_for_connections(each, db_wait)
    return Backends(
        sessions=make_session_factory(engine),
        storage=storage,
        tracker=Tracker(settings.tracking_uri, settings.mlflow_experiment, settings.artifacts_root),
    )
