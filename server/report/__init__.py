"""A sweep's report: the comparison table, validation curves, the objective against each searched parameter,
Optuna's parameter importances, and links to every trial's MLflow run and to the study in Optuna dashboard.

``gather`` reads the store, MLflow and Optuna into a :class:`Report`; ``figures`` draws its PNGs; ``render``
writes it as HTML, Markdown, or a zip of the Markdown and its figures.
"""

from __future__ import annotations

from server.report.gather import Report, build
from server.report.render import bundle, render_html, render_markdown

__all__ = ["Report", "build", "bundle", "render_html", "render_markdown"]
