"""The CLI's client of the REST API: every client command goes through here, like any other client."""

from __future__ import annotations

import getpass
from typing import Any

import httpx
import typer

from server.cli.app import err
from server.core.config import Settings

USER_HEADER = "X-Vitsweep-User"  # who submits: the sweep's MLflow runs record it as their user


def _login() -> str | None:
    """The user's login name, as MLflow's own client takes it for ``mlflow.user``; None where there is none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        return None


class ApiClient:
    """Calls the vitsweep API at ``settings.base_url`` with the bearer token if one is set; connection failures
    and 4xx/5xx answers become a clear message on stderr and exit code 1."""

    def __init__(self, settings: Settings, timeout: float = 30) -> None:
        self.base_url = settings.base_url
        login = _login()
        headers = {USER_HEADER: login} if login else {}
        if settings.api_token is not None:
            headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
        self._headers = headers
        self._timeout = timeout

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout) as client:
                response = client.request(method, path, **kwargs)
        except httpx.ConnectError:
            err.print(f"[red]cannot reach the vitsweep API at {self.base_url}[/]; start it with `vitsweep up` "
                      "or set VITSWEEP_API_URL")
            raise typer.Exit(1) from None
        if response.status_code >= 400:
            err.print(f"[red]{response.status_code}[/] {error_text(response)}")
            raise typer.Exit(1)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET ``path`` and return its JSON."""
        return self.call("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs: Any) -> Any:
        """POST to ``path`` and return its JSON."""
        return self.call("POST", path, **kwargs).json()


def error_text(response: httpx.Response) -> str:
    """The ``detail`` of an error answer: validation errors one per line with the path of the bad field."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text
    if isinstance(detail, list):
        return "\n".join(f"  {'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}{_given(d)}" for d in detail)
    return str(detail)


def _given(error: dict[str, Any]) -> str:
    """`` (got 'x')`` for a validation error that names a short scalar input (a query value, a spec field)."""
    value = error.get("input")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(str(value)) <= 80:
        return f" (got {value!r})"
    return ""
