"""Builds the FastAPI app: routers under ``/api/v1``, ``/healthz``, OpenAPI at ``/docs``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server.api.deps import ReadAuthorized
from server.api.routes import catalog, compare, health, reports, sweeps
from server.core.config import Settings
from server.core.db import is_transient
from server.spec import ExperimentSpec
from server.store import Backends

API_PREFIX = "/api/v1"
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, backends: Backends | None = None) -> FastAPI:
    """The app for ``settings``; migrations run and backends are created at startup unless ``backends`` is given."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backends is None:
            import migrations
            from worker.worker import make_backends

            settings.ensure_home()
            migrations.upgrade(settings.db_url)
            app.state.backends = make_backends(settings)
            _ = app.state.backends.tracker.experiment_id  # create the MLflow store and experiment now, not mid-request
        else:
            app.state.backends = backends
        yield

    app = FastAPI(
        title="vitsweep",
        summary="Sweeps of vision transformers and CNN baselines: Optuna search, MLflow tracking, SQL store.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    if backends is not None:
        app.state.backends = backends
    app.include_router(health.router)
    # Reads are open unless VITSWEEP_PROTECT_READS; mutating routes carry their own token check as well.
    app.include_router(sweeps.router, prefix=API_PREFIX, dependencies=[ReadAuthorized])
    app.include_router(reports.router, prefix=API_PREFIX, dependencies=[ReadAuthorized])
    app.include_router(compare.router, prefix=API_PREFIX, dependencies=[ReadAuthorized])
    app.include_router(catalog.router, prefix=API_PREFIX, dependencies=[ReadAuthorized])
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    _openapi_with_spec(app)
    return app


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database is restarting or unreachable: 503 with a message (never the URL), and the next request after
    it is back succeeds (pre-ping replaces the dead pooled connections). Other database errors are our bugs: 500."""
    if is_transient(exc):
        log.warning("%s %s: database unavailable (%s)", request.method, request.url.path, type(exc).__name__)
        return JSONResponse(
            {"detail": "database unavailable; try again shortly"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    log.error("%s %s failed in the database", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


def _openapi_with_spec(app: FastAPI) -> None:
    """The submit endpoint reads its body by hand (JSON or YAML); publish the spec's schema for it anyway."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        spec_schema = ExperimentSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(spec_schema.pop("$defs", {}))
        components["ExperimentSpec"] = spec_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitsweep")
    except PackageNotFoundError:
        return "0.0.0"
