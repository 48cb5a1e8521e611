"""Shared fixtures: per-test stores on SQLite and PostgreSQL, settings, backends, the real app.

PostgreSQL is the local server at 127.0.0.1:5432 (trust auth). Set VITSWEEP_TEST_PG_URL to point elsewhere.

Stores come from templates made once per session: the vitsweep store with its migrations and Optuna's tables,
and an MLflow store with its own migrations. A test gets a copy (a file copy on SQLite, ``CREATE DATABASE ...
TEMPLATE`` on PostgreSQL), never the template itself, so tests stay independent while the seconds of migrations
are spent once. ``empty_db_url`` gives an empty database, for the migration tests; ``pg_url`` an empty
PostgreSQL database for tests whose processes migrate it themselves.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("VITSWEEP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def pg_admin() -> sa.Engine:
    """An autocommit engine on the server's admin database; pre-pings, so it survives a server restart."""
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def pg_database_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def pg_available() -> None:
    try:
        engine = pg_admin()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # CI runs PostgreSQL the same way; a missing server is a failure, not a skip
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")


@pytest.fixture
def fresh_pg_database(pg_available: None) -> Iterator[PgDatabases]:
    """Makes PostgreSQL databases for one test (empty, or copies of a template) and drops them afterwards."""
    databases = PgDatabases()
    yield databases
    databases.drop_all()


class PgDatabases:
    """Databases made by one test, dropped (connections forced closed) when it ends."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.admin = pg_admin()

    def create(self, prefix: str = "vitsweep_test", template: str | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        self.names.append(name)
        return pg_database_url(name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture
def pg_url(fresh_pg_database: PgDatabases) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return fresh_pg_database.create()


# -- templates ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Templates:
    store: Path  # a migrated SQLite vitsweep store, Optuna's tables included
    mlflow: Path  # a migrated SQLite MLflow store (no experiment yet: its artifact location is per home)


def _settle(path: Path) -> None:
    """Fold a SQLite file's write-ahead log into it, so that a plain file copy holds everything."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")


def _prepare_store(url: str) -> None:
    import migrations
    from server.core.studies import make_storage

    migrations.upgrade(url)
    make_storage(url).engine.dispose()  # Optuna creates (and checks) its own tables


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("templates")
    store, mlflow = root / "vitsweep.db", root / "mlflow.db"
    _prepare_store(f"sqlite:///{store}")
    MlflowClient(f"sqlite:///{mlflow}").search_experiments()  # creates and migrates MLflow's tables
    for path in (store, mlflow):
        _settle(path)
    return Templates(store, mlflow)


@pytest.fixture(scope="session")
def pg_template(pg_available: None) -> Iterator[str]:
    """A migrated PostgreSQL database that per-test stores are created from; dropped at the end of the session."""
    databases = PgDatabases()
    url = databases.create("vitsweep_template")
    _prepare_store(url)
    yield url.rsplit("/", 1)[1]
    databases.drop_all()


# -- per-test stores ------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, templates: Templates) -> str:
    """A migrated store on each backend (like Optuna's storage tests), copied from the session's template."""
    if request.param == "sqlite":
        target = tmp_path / "vitsweep.db"
        shutil.copyfile(templates.store, target)
        return f"sqlite:///{target}"
    template = request.getfixturevalue("pg_template")
    return request.getfixturevalue("fresh_pg_database").create(template=template)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend, for tests of the migrations themselves."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path: Path, db_url: str, templates: Templates, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Settings of one test's embedded stack: its home, its store, and an MLflow store copied from the template."""
    from server.core.config import Settings

    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(templates.mlflow, home / "mlflow.db")
    for key in list(os.environ):
        if key.startswith("VITSWEEP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VITSWEEP_HOME", str(home))
    monkeypatch.setenv("VITSWEEP_DATABASE_URL", db_url)
    monkeypatch.setenv("VITSWEEP_POLL_SECONDS", "0.2")
    for key in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # a Worker sets these; undone after the test
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    return Settings()


@pytest.fixture
def backends(settings):  # type: ignore[no-untyped-def]
    from server.core.backends import make_backends

    b = make_backends(settings)
    yield b
    b.dispose()


@pytest.fixture
def client(settings, backends):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from server.main import create_app

    with TestClient(create_app(settings, backends)) as c:
        yield c


SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
"""For tests that exercise no storage (input checks, schemas, the catalog): one backend is enough."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tests first (longest first is what keeps parallel workers busy to the end): each worker process
    then fills in with the quick ones, instead of one slow test running alone at the end of the suite."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)


def pytest_configure(config: pytest.Config) -> None:
    """Each test process trains on its share of the cores. torch's default is a thread per core in every
    process: two test processes on two cores then put four busy threads on two cores, which wait for each other
    (seven of the study cases took 71 s that way, 54 s with a thread each). Worker
    processes the tests start (worker slots, servers, scripts) get as many through ``OMP_NUM_THREADS``, which
    torch and a worker supervisor's slots follow."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if count > 1:
        import torch

        from worker.supervisor import slot_threads

        threads = slot_threads(count, env={})
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def pytest_collection_finish(session: pytest.Session) -> None:
    _settle_heap()


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _settle_heap()


def _settle_heap() -> None:
    """What outlives a test (modules, session fixtures, caches) is frozen once its garbage is collected, as the
    worker does between trials: the full collection each training run starts with (``PeakMemory``) then walks
    only what the running test made, not every module of the suite again (0.4 s a run, before). A worker run in
    a test unfreezes on its way out, and the next test's end freezes again."""
    from worker.worker import settle_heap

    settle_heap()
