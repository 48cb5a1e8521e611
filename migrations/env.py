"""Alembic environment: our tables only, our own version table, URL from the caller or the settings."""

from __future__ import annotations

from alembic import context

from migrations import VERSION_TABLE
from server.core.db import make_engine
from server.core.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return url
    from server.core.config import Settings

    return Settings().db_url


def include_object(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
    # Optuna's tables share the database; never touch them.
    if type_ == "table":
        return name in target_metadata.tables
    return True


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, version_table=VERSION_TABLE,
        include_object=include_object, render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection, target_metadata=target_metadata, version_table=VERSION_TABLE,
                include_object=include_object, render_as_batch=True, compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
