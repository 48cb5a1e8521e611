"""The API token in front of the web UIs that ``vitsweep up`` starts, so that a token protects them as it does the API.

Optuna dashboard can delete a live sweep's study and MLflow's UI can create and delete experiments, and neither has
a token of its own. With ``VITSWEEP_API_TOKEN`` set, the dashboard is served in this process behind a check of
the token (:func:`serve_dashboard`), and MLflow's UI listens on a Unix socket in a private directory with
:func:`proxy_app` in front of it, so neither has an open port. A request passes with ``Authorization: Bearer
<token>`` or with HTTP Basic credentials whose password is the token (any user name), which is what a browser
asks for after the ``401``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

log = logging.getLogger(__name__)

REALM = "vitsweep"
CHALLENGE = (
    "This UI needs the vitsweep API token (VITSWEEP_API_TOKEN): sign in with any user name and the token as the "
    "password, or send 'Authorization: Bearer <token>'.\n"
)
# Headers that belong to one connection, not to the request or response (RFC 9110 7.6.1), and the credentials,
# which the UI behind the proxy never sees.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding",
    "upgrade",
})
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token``: as a bearer token, or as a Basic password."""
    if not header or not token:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return secrets.compare_digest(value.encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, sep, password = decoded.partition(":")
        return bool(sep) and secrets.compare_digest(password.encode(), token.encode())
    return False


def _challenge_headers() -> dict[str, str]:
    return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"', "Cache-Control": "no-store"}


# -- Optuna dashboard: its WSGI app behind the token, in this process ---------------------------------------------


class TokenGate:
    """WSGI middleware: requests without the token get a ``401`` challenge and never reach ``app``."""

    def __init__(self, app: WsgiApp, token: str) -> None:
        self.app = app
        self.token = token

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if authorized(environ.get("HTTP_AUTHORIZATION"), self.token):
            environ.pop("HTTP_AUTHORIZATION", None)
            return self.app(environ, start_response)
        body = CHALLENGE.encode()
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                            ("Content-Length", str(len(body))), *_challenge_headers().items()])
        return [body]


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def dashboard_app(storage_url: str, token: str | None) -> WsgiApp:
    """Optuna dashboard's own WSGI app on ``storage_url``, behind the token where there is one."""
    import optuna_dashboard

    app: WsgiApp = optuna_dashboard.wsgi(storage_url)
    return TokenGate(app, token) if token else app


def serve_dashboard(storage_url: str, host: str, port: int, token: str | None) -> None:
    """Serve Optuna dashboard on ``host:port`` until interrupted (threaded wsgiref, as ``optuna-dashboard`` does)."""
    httpd = make_server(host, port, dashboard_app(storage_url, token), server_class=_ThreadedServer,
                        handler_class=_QuietHandler)
    log.info("Optuna dashboard on http://%s:%d/%s", host, port, " (token required)" if token else "")
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


# -- MLflow's UI: a reverse proxy to its Unix socket ---------------------------------------------------------------


def proxy_app(upstream_socket: Path, token: str, *, name: str = "the UI") -> Starlette:
    """An ASGI reverse proxy to the HTTP server on ``upstream_socket`` that lets only requests with the token pass.

    The client's ``Host`` is forwarded (MLflow checks it against its allowed hosts); its credentials are not.
    """
    client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(upstream_socket)),
                               base_url="http://upstream", timeout=httpx.Timeout(300.0, connect=10.0))

    async def forward(request: Request) -> Response:
        if not authorized(request.headers.get("authorization"), token):
            return PlainTextResponse(CHALLENGE, status_code=401, headers=_challenge_headers())
        headers = [(k, v) for k, v in request.headers.raw
                   if k.decode("latin-1").lower() not in _HOP_BY_HOP | {"authorization"}]
        upstream = client.build_request(
            request.method, httpx.URL(path=request.url.path, query=request.url.query.encode("latin-1")),
            headers=headers, content=request.stream(),
        )
        try:
            response = await client.send(upstream, stream=True)
        except httpx.TransportError as exc:
            log.warning("%s did not answer %s %s: %s", name, request.method, request.url.path, exc)
            return PlainTextResponse(f"{name} is not answering ({type(exc).__name__}); try again shortly\n",
                                     status_code=502)
        out = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in _HOP_BY_HOP]
        proxied = StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                    background=BackgroundTask(response.aclose))
        proxied.raw_headers = out
        return proxied

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(routes=[Route("/{path:path}", forward, methods=_METHODS)], lifespan=lifespan)
