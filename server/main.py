"""Builds the FastAPI app: routers under ``/api/v1``, ``/healthz``, OpenAPI at ``/docs`` and ``/redoc`` (their
scripts served from the installed ``fastapi-offline`` package, not a CDN, so the docs work on an offline cluster).

The shared layer's errors become HTTP responses here, once: not found 404, conflict 409, a spec that cannot
run 422 (with the path of the bad field, like pydantic's own errors), Optuna or MLflow down 503, every spec
check busy 503 (with Retry-After), the database away 503.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import (
    get_openapi,
    validation_error_definition,
    validation_error_response_definition,
)
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from server.api.checks import plan_checker
from server.api.deps import ReadAuthorized
from server.api.responses import COMMON
from server.api.routes import catalog as catalog_routes
from server.api.routes import compare, health, reports, sweeps
from server.core.backends import Backends, make_backends
from server.core.config import Settings
from server.core.db import is_transient
from server.core.exceptions import BackendError, BusyError, ConflictError, NotFoundError, SpecError
from server.core.spec import Catalog, ExperimentSpec
from server.maintenance import enforce_limits

API_PREFIX = "/api/v1"
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, backends: Backends | None = None, catalog: Catalog | None = None) -> FastAPI:
    """The app for ``settings``; migrations run and backends are created at startup unless ``backends`` is given.

    ``catalog`` names the datasets and augmentation presets specs are checked against (the worker's, by default).
    """
    settings = settings or Settings()
    if catalog is None:
        from worker.catalog import WORKER_CATALOG

        catalog = WORKER_CATALOG

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if backends is None:
            import migrations

            settings.ensure_home()
            migrations.upgrade(settings.db_url)
            app.state.backends = make_backends(settings)
            _ = app.state.backends.tracker.experiment_id  # create the MLflow store and experiment now, not mid-request
            # The spec checks' fork server imports torch and the models (seconds): start it now, in the background.
            threading.Thread(target=plan_checker(app).warm, daemon=True, name="plan-check-warmup").start()
        else:
            app.state.backends = backends
        # Deadlines and leases hold with no worker running (the workers enforce them too).
        enforcer = (asyncio.create_task(enforce_limits(app.state.backends, settings))
                    if settings.maintenance_seconds > 0 else None)
        yield
        if enforcer is not None:
            enforcer.cancel()
            with suppress(asyncio.CancelledError):
                await enforcer

    app = FastAPIOffline(
        title="vitsweep",
        summary="Sweeps of vision transformers and CNN baselines: Optuna search, MLflow tracking, SQL store.",
        version=_version(),
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.catalog = catalog
    if backends is not None:
        app.state.backends = backends
    app.include_router(health.router)
    # Reads are open unless VITSWEEP_PROTECT_READS; mutating routes carry their own token check as well.
    for module in (sweeps, reports, compare, catalog_routes):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=[ReadAuthorized], responses=COMMON)
    _map_errors(app)
    _openapi_with_spec(app)
    return app


def _operation_id(route: APIRoute) -> str:
    """Operation ids are the handlers' names (``list_trials``, not FastAPI's ``list_trials_api_v1_sweeps_…_get``):
    what a generated client calls its functions."""
    return route.name


def _map_errors(app: FastAPI) -> None:
    """Every error of the shared layer to its status, with ``{"detail": ...}`` like FastAPI's own errors."""

    def detail(code: int) -> Any:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=code)

        return handler

    app.add_exception_handler(NotFoundError, detail(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(ConflictError, detail(status.HTTP_409_CONFLICT))
    app.add_exception_handler(BackendError, detail(status.HTTP_503_SERVICE_UNAVAILABLE))
    app.add_exception_handler(BusyError, _busy)
    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)


async def _spec_error(request: Request, exc: Exception) -> JSONResponse:
    """A spec that parsed but cannot run: 422 shaped like a validation error, located at the bad field."""
    assert isinstance(exc, SpecError)
    body = [{"loc": ["body", *exc.loc], "msg": exc.msg, "type": "value_error"}]
    return JSONResponse({"detail": _encodable(jsonable_encoder(body))}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422, with the input it quotes made encodable (a JSON ``"\ud800"`` is a lone surrogate,
    which UTF-8 cannot carry: the default handler fails on it with a 500 and a reset connection)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _encodable(jsonable_encoder(exc.errors()))}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _encodable(value: Any) -> Any:
    """``value`` with every string that UTF-8 cannot encode written with backslash escapes (``\ud800``)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


async def _busy(request: Request, exc: Exception) -> JSONResponse:
    """The server is at capacity for this request: 503 with when to try again."""
    assert isinstance(exc, BusyError)
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": str(exc.retry_after)})


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
        # Declared by hand for the submit endpoint's body (FastAPI adds them only for parameters it validates).
        components.setdefault("ValidationError", validation_error_definition)
        components.setdefault("HTTPValidationError", validation_error_response_definition)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitsweep")
    except PackageNotFoundError:
        return "0.0.0"
