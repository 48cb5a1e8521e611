"""The shared layer: what the API and the worker both stand on.

Settings (``config``), the SQL store (``db``, ``models``, ``queue``, ``sweeps``), Optuna (``studies``,
``samplers``), MLflow (``tracking``), the spec (``spec``), objectives and data paths. It imports nothing from
the API, the CLI, reports or ``worker``: only ``vitmodels`` and libraries (``tests/test_layers.py`` holds it
to that).
"""
