"""Engine and session factory for the sweep store.

SQLite gets WAL, a generous busy timeout, and explicit transactions: write transactions that read first begin
``IMMEDIATE`` so two processes never both read and then race to write (the "database is locked" failure).
PostgreSQL gets pre-ping so a restarted server is noticed and reconnected. Workers also wait for an
unreachable server (:func:`wait_for_connections`) and retry a transaction cut off mid-way (:func:`retry_db`), so
a PostgreSQL restart of up to ``VITSWEEP_DB_WAIT_SECONDS`` stalls them instead of failing trials; the API does
neither and answers 503 while the database is away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_MS = 60_000
T = TypeVar("T")
log = logging.getLogger(__name__)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str) -> Engine:
    """Create the engine for ``url``; SQLite files get their directory created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    if parsed.drivername in ("postgresql", "postgres"):
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_recycle=1800)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, decide when transactions begin (pysqlite's own BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction takes the write lock up front on SQLite (no-op elsewhere); commits on exit."""
    with factory() as session:
        session.connection(execution_options={"sqlite_immediate": True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps, e.g. Optuna's ``StorageInternalError``) means the database is unreachable
    or restarting, rather than a bad statement: lost connections, refused connections, admin shutdown, pool timeouts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PoolTimeoutError):
            return True
        if isinstance(current, DBAPIError) and (
            current.connection_invalidated or isinstance(current, (OperationalError, InterfaceError))
        ):
            # SQLite reports a missing table as an OperationalError too: that is a store without its schema
            # (never migrated, or another file), which no amount of waiting fixes.
            return not _missing_schema(current)
        current = current.__cause__ or current.__context__
    return False


def _missing_schema(exc: DBAPIError) -> bool:
    return str(exc.orig).startswith(("no such table", "no such column"))


def retry_db(
    fn: Callable[[], T], *, max_wait: float = 45.0, attempts: int | None = None, first_delay: float = 0.5,
    max_delay: float = 5.0, what: str = "database call",
) -> T:
    """Call ``fn`` (one whole transaction), again with exponential backoff while it fails for a transient reason.

    Gives up, re-raising the last error, once ``max_wait`` seconds have passed or ``attempts`` calls were made.
    Only for transactions that are safe to run twice: each of the queue's statements checks ownership and state.
    """
    deadline = time.monotonic() + max_wait
    delay = first_delay
    tries = 0
    while True:
        tries += 1
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0 or (attempts is not None and tries >= attempts):
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, min(delay, left))
            time.sleep(min(delay, left))
            delay = min(delay * 2, max_delay)


def wait_for_connections(engine: Engine, max_wait: float, *, max_delay: float = 5.0) -> None:
    """Make every new connection of ``engine`` wait up to ``max_wait`` seconds for a server that refuses or is
    restarting, instead of failing at once. With pre-ping, a pooled connection that died in a restart is replaced
    through here too. A no-op on SQLite and for ``max_wait <= 0``."""
    if max_wait <= 0 or engine.dialect.name == "sqlite":
        return

    @event.listens_for(engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + max_wait
        delay = 0.25
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.warning("database unreachable (%s); waiting %.1fs", str(exc).strip().splitlines()[0][:200],
                            min(delay, left))
                time.sleep(min(delay, left))
                delay = min(delay * 2, max_delay)
