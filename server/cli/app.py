"""The Typer application the command modules attach their commands to, and the consoles they print to."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from server.core.config import Settings

app = typer.Typer(help="Sweeps of vision transformers and CNN baselines.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
# Piped output (CI logs, files) gets a wide console rather than rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def settings() -> Settings:
    """This process's settings, read from ``VITSWEEP_*`` when a command starts; a bad value ends the command with
    its message (naming the variable), not a traceback."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = f"VITSWEEP_{field.upper()}" if field else "settings"
            message = error["msg"].removeprefix("Value error, ")
            err.print(message if message.startswith("VITSWEEP_") else f"{name}: {message}", markup=False, soft_wrap=True,
                      highlight=False)
        raise typer.Exit(2) from None
