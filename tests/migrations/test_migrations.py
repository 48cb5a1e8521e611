"""`alembic upgrade head` on an empty database gives exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import migrations
from server.core.db import make_engine
from server.core.models import Base


def _diff(url: str) -> list:  # type: ignore[type-arg]
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": lambda obj, name, type_, reflected, compare_to: type_ != "table" or name in Base.metadata.tables,
                },
            )
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_head_matches_metadata(empty_db_url: str) -> None:
    migrations.upgrade(empty_db_url)
    assert migrations.current(empty_db_url) is not None
    assert _diff(empty_db_url) == []


def test_own_version_table_beside_optuna(empty_db_url: str) -> None:
    """Optuna keeps its own `alembic_version` in the same database; ours must not collide with it."""
    from server.core.studies import make_storage

    make_storage(empty_db_url)  # Optuna creates its tables first
    migrations.upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    names = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert {"sweeps", "sweep_trials", migrations.VERSION_TABLE, "alembic_version", "studies", "trials"} <= names
    assert _diff(empty_db_url) == []


def test_downgrade_to_base_and_up_again(empty_db_url: str) -> None:
    migrations.upgrade(empty_db_url)
    migrations.downgrade(empty_db_url, "base")
    engine = make_engine(empty_db_url)
    assert "sweeps" not in sa.inspect(engine).get_table_names()
    engine.dispose()
    migrations.upgrade(empty_db_url)
    assert _diff(empty_db_url) == []
