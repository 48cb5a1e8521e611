from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import PlainTextResponse, Response

from server import compare
from server.api.deps import SessionsDep
from server.api.routes.sweeps import MAX_ID

router = APIRouter(tags=["compare"])


def parse_ids(raw: str) -> list[int]:
    try:
        ids = [int(x) for x in raw.replace(" ", "").split(",") if x]
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"sweeps must be comma-separated integers, got {raw!r}") from None
    if not ids or len(ids) > 100:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give between 1 and 100 sweep ids")
    bad = [i for i in ids if not 1 <= i <= MAX_ID]
    if bad:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"sweep ids run from 1 to {MAX_ID}, got {bad[0]}")
    return list(dict.fromkeys(ids))


def _values(raw: str | None) -> list[str] | None:
    return ([v.strip() for v in raw.split(",") if v.strip()] or None) if raw else None


@router.get("/compare", responses={200: {"content": {"text/csv": {}, "text/markdown": {}}}})
def compare_sweeps(
    sessions: SessionsDep,
    sweeps: Annotated[
        str, Query(max_length=2000, pattern=r"^[0-9 ]+(,[0-9 ]*)*$", description="Comma-separated sweep ids, e.g. 1,2")
    ],
    best: bool = False,
    format: compare.Format = "json",
    sort: Annotated[str | None, Query(max_length=64, description="A column to sort by, e.g. best_val_acc")] = None,
    order: Literal["asc", "desc"] = "desc",
    state: Annotated[str | None, Query(max_length=200, description="Only trials in these states, e.g. completed,pruned")] = None,
    model: Annotated[str | None, Query(max_length=2000, description="Only trials of these models, e.g. vit,cnn")] = None,
    dataset: Annotated[str | None, Query(max_length=2000, description="Only trials on these datasets")] = None,
) -> Any:
    """One row per trial (or per sweep's best trial) across sweeps, filtered and sorted, as JSON, CSV or Markdown."""
    ids = parse_ids(sweeps)
    rows = compare.rows(sessions, ids, best_only=best)
    try:
        rows = compare.filter_rows(rows, state=_values(state), model=_values(model), dataset=_values(dataset))
        rows = compare.sort_rows(rows, sort, descending=order == "desc")
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if format == "json":
        return rows
    media = {"csv": "text/csv", "md": "text/markdown", "table": "text/markdown"}[format]
    return PlainTextResponse(compare.render(rows, format), media_type=media) if format != "csv" else Response(
        compare.render(rows, "csv"), media_type=media
    )
