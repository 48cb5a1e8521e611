"""A sweep's report: self-contained HTML, or Markdown zipped with its figures."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from server import report
from server.api.deps import BackendsDep, SettingsDep
from server.api.responses import NO_SWEEP
from server.api.routes.sweeps import SweepId

router = APIRouter(prefix="/sweeps", tags=["reports"])


@router.get(
    "/{sweep_id}/report",
    response_class=HTMLResponse,
    responses={
        200: {
            "description": "The report: an HTML page, or with format=md a zip of report.md and its figures",
            "content": {"text/html": {"schema": {"type": "string"}},
                        "application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **NO_SWEEP,
    },
)
def get_report(
    backends: BackendsDep, settings: SettingsDep, sweep_id: SweepId, format: Literal["html", "md"] = "html"
) -> Response:
    """The sweep's report: comparison table, validation curves, the objective against each searched parameter,
    parameter importances, links to MLflow runs and Optuna dashboard.

    ``format=html`` (default): one self-contained page, figures inline. ``format=md``: a zip of ``report.md``
    and the PNG figures it refers to.
    """
    built = report.build(backends, settings, sweep_id)
    if format == "md":
        return Response(
            report.bundle(built), media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="sweep-{sweep_id}-report.zip"'},
        )
    return HTMLResponse(report.render_html(built))
