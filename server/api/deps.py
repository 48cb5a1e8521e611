"""Dependency aliases of the API layer: settings, backends, sessions, the catalog and the auth guard."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from server.core.backends import Backends
from server.core.config import Settings
from server.core.spec import Catalog


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_backends(request: Request) -> Backends:
    return request.app.state.backends


def get_sessions(request: Request) -> sessionmaker[Session]:
    return request.app.state.backends.sessions


def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
BackendsDep = Annotated[Backends, Depends(get_backends)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]

_bearer = HTTPBearer(
    auto_error=False,
    description="Required on mutating endpoints when VITSWEEP_API_TOKEN is set; on reads too with VITSWEEP_PROTECT_READS.",
)


def _check_token(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    expected = settings.api_token.get_secret_value() if settings.api_token else None
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        # Never echo what was sent: a near-miss token is still a secret.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def require_token(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Mutating endpoints need ``Authorization: Bearer <VITSWEEP_API_TOKEN>`` when a token is configured."""
    _check_token(settings, credentials)


def require_read_token(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Read-only endpoints need the token too when ``VITSWEEP_PROTECT_READS`` is set."""
    if settings.protect_reads:
        _check_token(settings, credentials)


Authorized = Depends(require_token)
ReadAuthorized = Depends(require_read_token)
