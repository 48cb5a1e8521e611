"""Alembic migrations of the sweep store (``vitsweep db upgrade`` applies them; so do the API and workers at start).

Many processes may start together on a fresh store (six workers and the API), so an upgrade runs under a lock:
a PostgreSQL advisory lock, or a file lock beside a SQLite database. The first process migrates; the others wait
for it and then find the store at head. Optuna's own tables (and its ``alembic_version``) are created under the
same lock, since Optuna's check-then-create races just the same.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "vitsweep_alembic_version"  # Optuna keeps its own `alembic_version` in the same database
LOCK_KEY = zlib.crc32(b"vitsweep.migrations")  # the PostgreSQL advisory lock's key (any constant bigint)
LOCK_WAIT_SECONDS = 600.0
log = logging.getLogger(__name__)


class SchemaError(RuntimeError):
    """The store's schema cannot be brought to what this vitsweep needs (a revision it does not know, say)."""


def alembic_config(url: str) -> Config:
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["url"] = url
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    found = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert found is not None
    return found


@contextmanager
def migration_lock(url: str, timeout: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the store's migration lock: one process at a time migrates a database. Waits up to ``timeout``."""
    from filelock import FileLock
    from filelock import Timeout as FileLockTimeout
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from server.core.db import make_engine

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            yield  # a private in-memory database: nobody to race with
            return
        path = Path(parsed.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{path}.migrate.lock")
        try:
            lock.acquire(timeout=0)
        except FileLockTimeout:
            log.info("another process is migrating %s; waiting for it", path)
            try:
                lock.acquire(timeout=timeout)
            except FileLockTimeout:
                raise SchemaError(f"the migration lock {lock.lock_file} was held for over {timeout:.0f}s") from None
        try:
            yield
        finally:
            lock.release()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            # Session-level advisory lock on a connection of its own: held across Alembic's own transactions.
            deadline = time.monotonic() + timeout
            said = False
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
                conn.rollback()
                if not said:
                    log.info("another process is migrating the database; waiting for it")
                    said = True
                if time.monotonic() > deadline:
                    raise SchemaError(f"the database's migration lock was held for over {timeout:.0f}s")
                time.sleep(0.2)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (under the migration lock); at head, Optuna's tables too.

    Raises :class:`SchemaError` for a store at a revision this code does not know (a newer vitsweep's).
    """
    with migration_lock(url):
        before = current(url)
        try:
            command.upgrade(alembic_config(url), revision)
        except CommandError as exc:
            raise SchemaError(f"cannot migrate the store from revision {before!r} to {revision!r}: {exc} "
                              f"(this vitsweep knows revisions up to {head()!r})") from exc
        after = current(url)
        if after != before:
            log.info("migrated the store from revision %s to %s", before, after)
        if revision == "head":
            from server.core.studies import make_storage

            make_storage(url).engine.dispose()  # Optuna creates (and checks) its own tables


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from server.core.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    finally:
        engine.dispose()
