"""Comparison tables across sweeps: JSON rows (one model each), CSV or Markdown."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from pydantic import BeforeValidator, Field, StringConstraints

from server import compare
from server.api.deps import SessionsDep
from server.api.responses import error
from server.api.routes.sweeps import MAX_ID
from server.core.models import TrialState
from server.schemas import CompareRow

router = APIRouter(tags=["compare"])


def split_commas(values: Any) -> Any:
    """Repeated parameters (``sweeps=1&sweeps=2``) and comma-joined ones (``sweeps=1,2``, as clients before
    the array sent them) alike, as one list."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return values
    parts = [part.strip() for raw in values for part in (raw.split(",") if isinstance(raw, str) else [raw])]
    return [part for part in parts if part != ""]


Commas = BeforeValidator(split_commas)
SweepIds = Annotated[
    list[Annotated[int, Field(ge=1, le=MAX_ID)]], Commas,
    Query(min_length=1, max_length=100, description="Sweep ids: repeated (sweeps=1&sweeps=2) or comma-separated (1,2)"),
]
Names = list[Annotated[str, StringConstraints(max_length=200)]]


@router.get(
    "/compare",
    response_model=list[CompareRow],
    responses={
        200: {
            "description": "One row per trial: JSON (the default), or with format=csv|md|table a CSV or Markdown table",
            "content": {"text/csv": {"schema": {"type": "string"}}, "text/markdown": {"schema": {"type": "string"}}},
        },
        **error(404, "No such sweep"),
    },
)
def compare_sweeps(
    sessions: SessionsDep,
    sweeps: SweepIds,
    best: bool = False,
    format: compare.Format = "json",
    sort: Annotated[compare.SortColumn | None, Query(description="A column to sort by, e.g. best_val_acc")] = None,
    order: Literal["asc", "desc"] = "desc",
    state: Annotated[
        list[TrialState] | None, Commas, Query(max_length=len(TrialState), description="Only trials in these states")
    ] = None,
    model: Annotated[Names | None, Commas, Query(max_length=100, description="Only trials of these models, e.g. vit,cnn")] = None,
    dataset: Annotated[Names | None, Commas, Query(max_length=100, description="Only trials on these datasets")] = None,
) -> Any:
    """One row per trial (or per sweep's best trial) across sweeps, filtered and sorted, as JSON, CSV or Markdown.

    The filters, like ``sweeps``, take repeated or comma-separated values.
    """
    ids = list(dict.fromkeys(sweeps))
    rows = compare.rows(sessions, ids, best_only=best)
    states = [s.value for s in state] if state else None
    rows = compare.filter_rows(rows, state=states, model=model or None, dataset=dataset or None)
    try:
        rows = compare.sort_rows(rows, sort, descending=order == "desc")
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("query", "sort"), "msg": str(exc), "type": "value_error"}]) from None
    if format == "json":
        return rows
    media = {"csv": "text/csv", "md": "text/markdown", "table": "text/markdown"}[format]
    return PlainTextResponse(compare.render(rows, format), media_type=media) if format != "csv" else Response(
        compare.render(rows, "csv"), media_type=media
    )
