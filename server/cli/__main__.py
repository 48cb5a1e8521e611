"""``python -m server.cli``: the ``vitsweep`` command where its console script is not installed."""

from server.cli import main

main()
