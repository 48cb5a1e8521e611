from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import text

from server.api.deps import SessionsDep
from server.api.responses import error
from server.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses=error(503, "Database unreachable"))
def healthz(sessions: SessionsDep) -> Health:
    """Liveness and database reachability."""
    from importlib.metadata import version

    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"database unreachable: {type(exc).__name__}") from None
    return Health(status="ok", database="ok", version=version("vitsweep"))
