"""``vitsweep db``: the store's Alembic migrations, run against the configured database directly."""

from __future__ import annotations

from typing import Annotated

import typer

from server.cli.app import console, db_app, settings


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to the configured database."""
    import migrations

    s = settings()
    s.ensure_home()
    migrations.upgrade(s.db_url, revision)
    console.print(f"database at revision {migrations.current(s.db_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision."""
    import migrations

    console.print(str(migrations.current(settings().db_url)))
