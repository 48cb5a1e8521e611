"""Shared fixtures: per-test databases on SQLite and PostgreSQL, settings, backends, the real app.

PostgreSQL is the local server at 127.0.0.1:5432 (trust auth). Each test that uses it gets a fresh
database, dropped afterwards. Set VITSWEEP_TEST_PG_URL to point elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("VITSWEEP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_admin() -> sa.Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # survives the outage tests


@pytest.fixture(scope="session")
def pg_available() -> None:
    try:
        engine = _pg_admin()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # CI runs PostgreSQL the same way; a missing server is a failure, not a skip
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")


@pytest.fixture
def pg_url(pg_available: None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"vitsweep_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's URL on each backend, like Optuna's storage tests."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vitsweep.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from server.core.config import Settings

    home = tmp_path / "home"
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
    import migrations
    from worker.worker import make_backends

    migrations.upgrade(settings.db_url)
    b = make_backends(settings)
    yield b
    b.sessions.kw["bind"].dispose()


@pytest.fixture
def client(settings, backends):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from server.main import create_app

    with TestClient(create_app(settings, backends)) as c:
        yield c
