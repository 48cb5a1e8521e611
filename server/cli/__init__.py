"""The ``vitsweep`` command line: run the stack, submit and watch sweeps, compare trials.

``services`` runs processes (``server``, ``worker``, ``up``, ``demo``); ``sweeps`` and ``catalog`` are client
commands that talk to the REST API only (through ``client``), like any other client; ``db`` runs migrations.
"""

from __future__ import annotations

from server.cli import catalog, db, services, sweeps  # noqa: F401  (importing a module registers its commands)
from server.cli.app import app
from server.cli.services import DEMO_SPEC

__all__ = ["DEMO_SPEC", "app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
