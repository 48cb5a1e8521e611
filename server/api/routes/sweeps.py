"""Sweeps: submit (JSON or YAML), list, get, trials, add trials, cancel, pause, resume."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from server.api.checks import check_plan
from server.api.deps import Authorized, BackendsDep, SessionsDep, SettingsDep
from server.api.responses import INVALID, NO_SWEEP, Responses, error
from server.core import sweeps
from server.core.models import SweepState, Trial, TrialState
from server.core.spec import ExperimentSpec, check_document, load_json, load_yaml
from server.schemas import SweepPage, SweepPublic, TrialPublic, TrialsAdd

router = APIRouter(prefix="/sweeps", tags=["sweeps"])

MAX_ID = 2**31 - 1  # ids are 32-bit integer columns; larger ones cannot exist and must not reach the database
SweepId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="A sweep's id.")]

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json", "text/json", "", "*/*")
# A valid spec for the docs' "Try it out" (and for schemathesis' examples phase).
EXAMPLE_SPEC: dict[str, Any] = {
    "name": "vit-digits-lr",
    "dataset": {"name": "digits", "img_size": 16, "augment": "none"},
    "model": {"name": "vit", "arch": {"patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}},
    "train": {"epochs": 5, "batch_size": 64, "lr": 1e-3},
    "search": {"sampler": "tpe", "n_trials": 4, "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
}
SPEC_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ExperimentSpec"}, "example": EXAMPLE_SPEC},
        **{t: {"schema": {"$ref": "#/components/schemas/ExperimentSpec"}} for t in YAML_TYPES[:1]},
    },
}


def _public(view: sweeps.SweepView) -> SweepPublic:
    """The same view of a sweep wherever one is answered: listed, got, submitted or controlled."""
    s = view.sweep
    search = s.spec.get("search") or {}
    return SweepPublic(
        id=s.id, name=s.name, state=s.state, model=s.model, dataset=s.dataset, metric=s.metric,
        direction=s.direction, objectives=search.get("metrics") or [s.metric],
        directions=search.get("directions") or [s.direction], n_trials=s.n_trials,
        max_concurrent_trials=s.max_concurrent, deadline=s.deadline, counts=view.counts,
        best_trial=TrialPublic.model_validate(view.best) if view.best is not None else None,
        pareto_front=[t.number for t in view.pareto] if view.pareto is not None else None,
        study_name=s.study_name, mlflow_experiment_id=s.mlflow_experiment_id, mlflow_run_id=s.mlflow_run_id,
        error=s.error, created_at=s.created_at, updated_at=s.updated_at, finished_at=s.finished_at,
        spec=s.spec,
    )


def _bad_body(msg: str, typ: str = "body_parse") -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": msg, "type": typ}])


async def parse_spec_body(request: Request, max_bytes: int) -> ExperimentSpec:
    """Read a JSON or YAML spec; every failure becomes a 4xx naming the problem (and its field path): a
    ``SpecError`` is turned into a 422 by the app's error handler. Parsing runs in a worker thread."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"the spec is larger than {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():  # a chunked body without a length is cut off at the limit, not buffered
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"the spec is larger than {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise _bad_body("the request body is empty; send an experiment spec as JSON or YAML")
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype not in YAML_TYPES and ctype not in JSON_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"send the spec as application/json or application/yaml, not {ctype!r}"
        )
    return await run_in_threadpool(_parse_spec, body, ctype in YAML_TYPES)


def _parse_spec(body: bytes, is_yaml: bool) -> ExperimentSpec:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_body("the spec is not valid UTF-8") from None
    if is_yaml:
        try:
            data = load_yaml(text)  # safe: no Python tags, nothing executed
        except yaml.YAMLError as exc:
            raise _bad_body(f"malformed YAML: {exc}") from None
        except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits; absurd nesting
            raise _bad_body(f"malformed YAML: {type(exc).__name__}: {str(exc)[:200]}") from None
    else:
        try:
            data = load_json(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError, like a too-long integer
            raise _bad_body(f"malformed JSON: {str(exc)[:200] or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise _bad_body(f"the spec must be a mapping at the top level, got {type(data).__name__}", "model_type")
    check_document(data)
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"], **({"input": e["input"]} if _small(e.get("input")) else {})}
            for e in exc.errors(include_url=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


def _small(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) and len(str(value)) < 200


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    dependencies=[Authorized],
    openapi_extra={"requestBody": SPEC_BODY},
    responses={
        **INVALID, **error(413, "Body too large"), **error(415, "Neither JSON nor YAML"),
        **error(503, "Optuna, MLflow or the database unavailable, or every spec check busy (Retry-After); "
                     "nothing stored"),
    },
)
async def submit_sweep(
    request: Request, backends: BackendsDep, settings: SettingsDep,
    user: Annotated[str | None, Header(
        alias="X-Vitsweep-User", max_length=200,
        description="Who submits the sweep (the CLI sends the login name): its MLflow runs' user.")] = None,
) -> SweepPublic:
    """Validate an experiment spec (JSON or YAML), store it, create its Optuna study and queue its trials.

    Nothing of it runs on the event loop: parsing and storing in worker threads, the plan check (every model the
    plan can build) in a child process within ``VITSWEEP_SPEC_CHECK_SECONDS`` and ``..._MEMORY_MB``.
    """
    spec = await parse_spec_body(request, settings.max_body_bytes)
    await check_plan(request, spec)
    sweep = await run_in_threadpool(
        partial(sweeps.create_sweep, backends, spec, user=(user.strip() or None) if user else None)
    )
    view = await run_in_threadpool(sweeps.get_sweep, backends.sessions, sweep.id)
    return _public(view)


@router.get("", response_model=SweepPage)
def list_sweeps(
    sessions: SessionsDep,
    state: SweepState | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> SweepPage:
    """Sweeps, newest first, optionally only those in one state."""
    views, total = sweeps.list_sweeps(sessions, state=state, limit=limit, offset=offset)
    return SweepPage(items=[_public(v) for v in views], total=total, limit=limit, offset=offset)


@router.get("/{sweep_id}", response_model=SweepPublic, responses=NO_SWEEP)
def get_sweep(sessions: SessionsDep, sweep_id: SweepId) -> SweepPublic:
    """A sweep's state, trial counts by state, best trial so far, and its spec."""
    return _public(sweeps.get_sweep(sessions, sweep_id))


@router.get("/{sweep_id}/trials", response_model=list[TrialPublic], responses=NO_SWEEP)
def list_trials(sessions: SessionsDep, sweep_id: SweepId, state: TrialState | None = None) -> list[Trial]:
    """Every trial of a sweep: params, state, metrics, MLflow run, worker, times."""
    return sweeps.list_trials(sessions, sweep_id, state=state)


CONTROL_RESPONSES: Responses = {**NO_SWEEP, **error(409, "Wrong state")}


@router.post("/{sweep_id}/cancel", response_model=SweepPublic, dependencies=[Authorized], responses=CONTROL_RESPONSES)
def cancel_sweep(backends: BackendsDep, sweep_id: SweepId) -> SweepPublic:
    """Cancel: queued trials are dropped now, running ones stop at their next epoch boundary."""
    return _public(sweeps.cancel_sweep(backends, sweep_id))


@router.post(
    "/{sweep_id}/trials", response_model=SweepPublic, dependencies=[Authorized],
    responses={**NO_SWEEP, **error(409, "A grid, or a cancelled or failed sweep")},
)
def add_trials(backends: BackendsDep, sweep_id: SweepId, body: TrialsAdd) -> SweepPublic:
    """Queue more trials of a search; a completed sweep runs again. Grids are fixed (409)."""
    return _public(sweeps.add_trials(backends, sweep_id, body.n))


@router.post("/{sweep_id}/pause", response_model=SweepPublic, dependencies=[Authorized], responses=CONTROL_RESPONSES)
def pause_sweep(sessions: SessionsDep, sweep_id: SweepId) -> SweepPublic:
    """Pause: no new trials start; running ones finish."""
    return _public(sweeps.set_paused(sessions, sweep_id, True))


@router.post("/{sweep_id}/resume", response_model=SweepPublic, dependencies=[Authorized], responses=CONTROL_RESPONSES)
def resume_sweep(sessions: SessionsDep, sweep_id: SweepId) -> SweepPublic:
    """Resume a paused sweep."""
    return _public(sweeps.set_paused(sessions, sweep_id, False))
