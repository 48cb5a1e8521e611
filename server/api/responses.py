"""The error answers an operation can give, for its OpenAPI entry: each with its body's schema, so that a
generated client parses ``{"detail": ...}`` into a model instead of raising on an undeclared status."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.constants import REF_PREFIX

from server.schemas import ErrorMessage

Responses = dict[int | str, dict[str, Any]]


def error(code: int, description: str) -> Responses:
    """A ``{"detail": "..."}`` answer with ``code``."""
    return {code: {"model": ErrorMessage, "description": description}}


# FastAPI's own schema of its validation errors (``detail``: a list of located messages), which it declares by
# itself on every operation with parameters; a body read by hand needs it declared.
INVALID: Responses = {
    422: {
        "description": "Validation error: each message with the path of the bad field",
        "content": {"application/json": {"schema": {"$ref": f"{REF_PREFIX}HTTPValidationError"}}},
    }
}
NO_SWEEP = error(404, "No such sweep")
# Every operation behind the bearer token (mutating ones always, reads with VITSWEEP_PROTECT_READS) and the
# database: declared once, where the routers are included.
COMMON: Responses = {
    **error(401, "Missing or wrong bearer token (only when VITSWEEP_API_TOKEN is set)"),
    **error(503, "The database, Optuna or MLflow is unavailable; try again shortly"),
}
