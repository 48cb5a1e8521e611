"""Security: bearer-token auth on every mutating route (and on reads with VITSWEEP_PROTECT_READS), bad and hostile
input refused with a 4xx that names the problem (nothing stored, nothing executed), paths confined, no secret in a
response or a log, and the embedded stack bound to 127.0.0.1.

Routes are enumerated from ``app.routes``, so a route added later is covered the day it is added. Auth does not
depend on the storage backend, so these tests run on SQLite only.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from server.core.config import Settings
from server.core.models import Sweep, Trial
from server.main import create_app
from tests.conftest import Templates
from tests.helpers import quick_spec

TOKEN = "s3cret-Token-for-tests-0123456789"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# What a route needs to succeed, beyond a running sweep for {sweep_id}, keyed by (method, path): a JSON body,
# or a state to put the sweep in first. A new route that needs more fails test_with_the_token_... until added here.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/sweeps"): quick_spec(),
    ("POST", "/api/v1/sweeps/{sweep_id}/trials"): {"n": 1},
}
PRECONDITIONS = {("POST", "/api/v1/sweeps/{sweep_id}/resume"): "pause"}


@pytest.fixture
def db_url(tmp_path: Path, templates: Templates) -> str:
    """Overrides conftest's both-backends parameter: auth and input checks happen before any storage."""
    shutil.copyfile(templates.store, tmp_path / "vitsweep.db")
    return f"sqlite:///{tmp_path / 'vitsweep.db'}"


def _app(settings: Settings, backends: Any, **changes: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes), backends))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, templates: Templates) -> Iterator[tuple[TestClient, Any, Settings]]:
    """One secured app for the many tests that store nothing (bad input)."""
    from server.core.backends import make_backends

    home = tmp_path_factory.mktemp("shared")
    shutil.copyfile(templates.store, home / "vitsweep.db")
    shutil.copyfile(templates.mlflow, home / "mlflow.db")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'vitsweep.db'}", api_token=TOKEN)
    backends = make_backends(settings)
    with TestClient(create_app(settings, backends)) as client:
        yield client, backends, settings
    backends.dispose()


@pytest.fixture
def secured(settings: Settings, backends: Any) -> Iterator[TestClient]:
    with _app(settings, backends, api_token=SecretStr(TOKEN)) as client:
        yield client


@pytest.fixture
def locked(settings: Settings, backends: Any) -> Iterator[TestClient]:
    with _app(settings, backends, api_token=SecretStr(TOKEN), protect_reads=True) as client:
        yield client


def _routes(client: TestClient, methods: set[str]) -> list[tuple[str, str]]:
    """(method, full path) of every API route of the app: ``app.routes``, with included routers flattened (the
    docs pages, left out of the schema, are no API route)."""
    app: Any = client.app
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers were kept lazily: app.routes holds the APIRoutes
        found = [(r.path, r.methods) for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema]
    else:
        found = [(c.path, c.original_route.methods) for c in iter_route_contexts(app.routes)
                 if isinstance(c.original_route, APIRoute) and c.original_route.include_in_schema]
    return [(m, path) for path, route_methods in found for m in sorted(route_methods & methods)]


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _submit(client: TestClient, **changes: Any) -> int:
    r = client.post("/api/v1/sweeps", json=quick_spec(**changes), headers=_auth())
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _call(client: TestClient, method: str, path: str, headers: dict[str, str], sweep_id: int) -> Any:
    url = path.replace("{sweep_id}", str(sweep_id))
    params = {"sweeps": str(sweep_id)} if path.endswith("/compare") else None
    return client.request(method, url, headers=headers, params=params, json=BODIES.get((method, path)))


def _count(backends: Any, model: Any) -> int:
    with backends.sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


# -- auth -----------------------------------------------------------------------------------------------


def test_every_mutating_route_needs_the_token(secured: TestClient, backends: Any) -> None:
    routes = _routes(secured, MUTATING)
    assert ("POST", "/api/v1/sweeps") in routes and len(routes) >= 4, routes
    sweep_id = _submit(secured)
    sweeps_before = _count(backends, Sweep)
    for method, path in routes:
        for headers in ({}, _auth("wrong"), _auth(TOKEN + "x"), {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}, {"X-Api-Token": TOKEN}):
            r = _call(secured, method, path, headers, sweep_id)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert r.json()["detail"] == "missing or wrong bearer token"
            assert r.headers["www-authenticate"] == "Bearer"
        r = secured.request(method, path.replace("{sweep_id}", str(sweep_id)), params={"token": TOKEN})
        assert r.status_code == 401, (method, path, "token in the query string")
    assert _count(backends, Sweep) == sweeps_before, "a refused call changed something"
    state = secured.get(f"/api/v1/sweeps/{sweep_id}").json()["state"]
    assert state == "running", "a refused call changed the sweep"


def test_with_the_token_every_mutating_route_succeeds(secured: TestClient) -> None:
    for method, path in _routes(secured, MUTATING):
        sweep_id = _submit(secured)
        if PRECONDITIONS.get((method, path)) == "pause":
            assert secured.post(f"/api/v1/sweeps/{sweep_id}/pause", headers=_auth()).status_code == 200
        r = _call(secured, method, path, _auth(), sweep_id)
        assert 200 <= r.status_code < 300, (method, path, r.status_code, r.text, "add its precondition to PRECONDITIONS")


def test_reads_are_open_unless_protected(secured: TestClient) -> None:
    sweep_id = _submit(secured)
    for method, path in _routes(secured, {"GET"}):
        r = _call(secured, method, path, {}, sweep_id)
        assert 200 <= r.status_code < 300, (path, r.status_code, r.text)


def test_protected_reads_need_the_token(locked: TestClient) -> None:
    sweep_id = _submit(locked)
    reads = _routes(locked, {"GET"})
    assert {p for _, p in reads} >= {"/api/v1/sweeps", "/api/v1/sweeps/{sweep_id}", "/api/v1/compare", "/healthz"}
    for method, path in reads:
        anonymous = _call(locked, method, path, {}, sweep_id)
        authorized = _call(locked, method, path, _auth(), sweep_id)
        assert 200 <= authorized.status_code < 300, (path, authorized.status_code, authorized.text)
        if path == "/healthz":  # liveness probes carry no token
            assert anonymous.status_code == 200
        else:
            assert anonymous.status_code == 401, (path, anonymous.status_code)
            assert _call(locked, method, path, _auth("wrong"), sweep_id).status_code == 401
    for method, path in _routes(locked, MUTATING):
        assert _call(locked, method, path, {}, sweep_id).status_code == 401, path
    # The schema and the docs say nothing about any sweep; they stay readable.
    assert locked.get("/openapi.json").status_code == 200
    for page in ("/docs", "/redoc", "/static-offline-docs/swagger-ui-bundle.js"):
        assert locked.get(page).status_code == 200, page


def test_protect_reads_without_a_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITSWEEP_PROTECT_READS", "true")
    monkeypatch.delenv("VITSWEEP_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="VITSWEEP_PROTECT_READS needs VITSWEEP_API_TOKEN"):
        Settings()
    monkeypatch.setenv("VITSWEEP_API_TOKEN", TOKEN)
    assert Settings().protect_reads


# -- no secret returned or logged -----------------------------------------------------------------------


def test_no_secret_in_responses_logs_or_settings_repr(
    settings: Settings, backends: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with _app(settings, backends, api_token=SecretStr(TOKEN), protect_reads=True) as client:
        sweep_id = _submit(client)
        calls = [(m, p, h) for m, p in _routes(client, MUTATING | {"GET"}) for h in ({}, _auth(), _auth("wrong"))]
        for method, path, headers in calls:
            r = _call(client, method, path, headers, sweep_id)
            seen.append(json.dumps(dict(r.headers)) + r.text)
        for path in ("/openapi.json", "/docs", "/healthz", "/api/v1/nope"):
            r = client.get(path, headers=_auth())
            seen.append(json.dumps(dict(r.headers)) + r.text)
        # A bad spec sent with the token echoes the bad field, never the request's headers.
        r = client.post("/api/v1/sweeps", json=quick_spec(name=TOKEN + "!"), headers=_auth())
        assert r.status_code == 422
    assert len(seen) > 30
    assert not [s for s in seen if TOKEN in s]
    assert TOKEN not in caplog.text
    pg = Settings(home=settings.home, api_token=TOKEN, database_url="postgresql://bob:hunter2@db/x")
    for text in (repr(pg), str(pg), f"{pg}", repr(pg.api_token)):
        assert TOKEN not in text and "hunter2" not in text, text
    assert "bob:***@db/x" in repr(pg)
    assert pg.db_url == "postgresql://bob:hunter2@db/x"  # masked in repr only


def test_database_errors_never_show_the_url(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable database is a 503 with a fixed message: no URL, no password, no driver text."""
    import optuna

    from server.core.backends import Backends
    from server.core.db import make_engine, make_session_factory
    from server.core.tracking import Tracker

    caplog.set_level(logging.DEBUG)
    url = "postgresql+psycopg://bob:hunter2@127.0.0.1:1/nowhere"  # port 1: refused at once
    settings = Settings(home=tmp_path, database_url=url)
    backends = Backends(make_session_factory(make_engine(url)), optuna.storages.InMemoryStorage(),
                        Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "x"))
    with TestClient(create_app(settings, backends)) as client:
        for method, path in [("GET", "/api/v1/sweeps"), ("GET", "/api/v1/sweeps/1"), ("POST", "/api/v1/sweeps/1/cancel"),
                             ("GET", "/api/v1/compare?sweeps=1")]:
            r = client.request(method, path)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json() == {"detail": "database unavailable; try again shortly"}
            assert r.headers["retry-after"]
        r = client.post("/api/v1/sweeps", json=quick_spec())
        assert r.status_code == 503 and "hunter2" not in r.text
        health = client.get("/healthz")
        assert health.status_code == 503 and "hunter2" not in health.text
    assert "hunter2" not in caplog.text


# -- the embedded stack binds localhost -----------------------------------------------------------------


def test_up_binds_localhost(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from server.stack import Stack

    for key in ("VITSWEEP_API_HOST", "VITSWEEP_API_URL", "VITSWEEP_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VITSWEEP_HOME", str(tmp_path))
    settings = Settings()
    assert settings.api_host == "127.0.0.1"
    services = Stack(settings).plan()
    assert {s.name for s in services} == {"api", "worker", "mlflow", "optuna-dashboard"}
    for service in services:
        if service.url is not None:
            assert service.url.startswith("http://127.0.0.1:"), (service.name, service.url)
        if "--host" in service.argv:
            assert service.argv[service.argv.index("--host") + 1] == "127.0.0.1", service.argv
        elif service.name != "worker":
            pytest.fail(f"{service.name} does not say where it binds: {service.argv}")


# -- bad and hostile input ------------------------------------------------------------------------------


def _json(spec: dict[str, Any]) -> tuple[str, str]:
    return json.dumps(spec), "application/json"


def _space(**params: Any) -> dict[str, Any]:
    return {**quick_spec()["search"], "space": params}


BILLION_LAUGHS = "\n".join(
    ["name: lol", "dataset: {name: synthetic}", "model: {name: cnn}", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
)

BAD_INPUTS: list[tuple[str, str, str, int, str]] = [
    # (id, body, content type, status, fragment of the message)
    ("python-object-tag", "!!python/object/apply:os.system ['touch /tmp/vitsweep-pwned']", "application/yaml", 422,
     "malformed YAML"),
    ("python-name-tag", "name: !!python/name:os.system\ndataset: {name: synthetic}\nmodel: {name: cnn}",
     "application/yaml", 422, "malformed YAML"),
    ("python-module-tag", "name: !!python/module:os\n", "application/yaml", 422, "malformed YAML"),
    ("yaml-billion-laughs", BILLION_LAUGHS, "application/yaml", 422, "values"),
    ("yaml-date", yaml.safe_dump(quick_spec(dataset={"options": {"num_samples": "2020-01-01"}})).replace(
        "'2020-01-01'", "2020-01-01"), "application/yaml", 422, "date"),
    ("yaml-binary", "name: x\ndescription: !!binary aGVsbG8=\n", "application/yaml", 422, "bytes"),
    ("yaml-int-keys", "name: x\ndataset: {name: synthetic, options: {1: 2}}\nmodel: {name: cnn}\n", "application/yaml",
     422, "keys must be strings"),
    ("huge-int", '{"name": "x", "train": {"seed": ' + "9" * 5000 + "}}", "application/json", 422, "malformed JSON"),
    ("int-beyond-64-bits", _json(quick_spec(dataset={"options": {"num_samples": 2**70}}))[0], "application/json", 422,
     "64 bits"),
    ("deep-nesting", '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}", "application/json", 422, "malformed JSON"),
    ("nan", _json(quick_spec(dataset={"options": {"noise": float("nan")}}))[0], "application/json", 422, "finite"),
    ("infinity-lr", _json(quick_spec(train={"lr": float("inf")}))[0], "application/json", 422, "finite"),
    ("nul-in-string", *_json(quick_spec(description="a\x00b")), 422, "NUL"),
    ("long-name", *_json(quick_spec(name="x" * 101)), 422, "at most 100"),
    ("long-description", *_json(quick_spec(description="x" * 5000)), 422, "at most 4096"),
    ("long-arch-key", *_json(quick_spec(model={"name": "cnn", "arch": {"k" * 65: 1}})), 422, "keys must be identifiers"),
    ("arch-key-not-identifier", *_json(quick_spec(model={"name": "cnn", "arch": {"__import__('os')": 1}})), 422,
     "keys must be identifiers"),
    ("many-arch-keys", *_json(quick_spec(model={"name": "cnn", "arch": {f"k{i}": 1 for i in range(65)}})), 422,
     "at most 64"),
    ("long-arch-list", *_json(quick_spec(model={"name": "cnn", "arch": {"widths": list(range(257))}})), 422,
     "at most 256"),
    ("deep-arch", *_json(quick_spec(model={"name": "cnn", "arch": {"k": [[[[[[1]]]]]]}})), 422, "nested"),
    ("long-arch-string", *_json(quick_spec(model={"name": "cnn", "arch": {"act": "x" * 300}})), 422, "at most 256"),
    ("many-sampler-options", *_json(quick_spec(search={**quick_spec()["search"],
                                                       "sampler_options": {f"o{i}": 1 for i in range(65)}})), 422,
     "at most 64"),
    ("unknown-sampler-option", *_json(quick_spec(search={**quick_spec()["search"], "sampler_options": {"bogus": 1}})),
     422, "refuses these options"),
    ("bad-pruner-option", *_json(quick_spec(search={**quick_spec()["search"], "pruner": "median",
                                                    "pruner_options": {"n_startup_trials": -1}})), 422, "refuses"),
    ("unknown-dataset-option", *_json(quick_spec(dataset={"options": {"root": "/etc"}})), 422, "unknown option"),
    ("many-choices", *_json(quick_spec(search=_space(**{"train.lr": {"type": "categorical",
                                                                     "choices": [0.1] * 257}}))), 422, "at most 256"),
    ("long-search-path", *_json(quick_spec(search=_space(**{"model.arch." + "k" * 300: {"type": "int", "low": 1,
                                                                                         "high": 2}}))), 422,
     "at most 200"),
    ("search-path-not-dotted", *_json(quick_spec(search=_space(**{"train.lr; drop table": {"type": "int", "low": 1,
                                                                                            "high": 2}}))), 422,
     "dotted identifiers"),
    ("huge-int-range", *_json(quick_spec(search=_space(**{"train.seed": {"type": "int", "low": 0, "high": 2**60}}))),
     422, "less than or equal"),
    ("many-matrix-entries", *_json(quick_spec(search=None, matrix={f"model.arch.k{i}": [1] for i in range(17)})), 422,
     "at most 16"),
    ("long-matrix-list", *_json(quick_spec(search=None, matrix={"train.seed": list(range(257))})), 422,
     "at most 256"),
    ("too-many-trials", *_json(quick_spec(search={**quick_spec()["search"], "n_trials": 10_001})), 422,
     "less than or equal to 10000"),
    ("too-many-epochs", *_json(quick_spec(train={"epochs": 10_001})), 422, "less than or equal to 10000"),
    ("matrix-too-big", *_json(quick_spec(search=None, matrix={"train.seed": list(range(200)),
                                                              "train.batch_size": list(range(1, 101))})), 422,
     "more than 10000 combinations"),
    ("grid-search-too-big", *_json(quick_spec(search={"sampler": "grid", "n_trials": 1, "space": {
        "train.seed": {"type": "categorical", "choices": list(range(150))},
        "train.batch_size": {"type": "categorical", "choices": list(range(1, 151))}}})), 422,
     "more than 10000 combinations: 150 x 150 = 22500"),
    ("arch-int-too-big", *_json(quick_spec(model={"name": "cnn", "arch": {"width": 2**40}})), 422, "at most 65536"),
    ("lone-surrogate", _json(quick_spec())[0].replace('"quick"', '"\\ud800"'), "application/json", 422,
     "lone surrogate"),
    # A key given twice would silently take its last value.
    ("json-duplicate-key", _json(quick_spec())[0].replace('"lr": 0.001', '"lr": 0.001, "lr": 0.1'), "application/json",
     422, "duplicate key 'lr'"),
    ("yaml-duplicate-key", yaml.safe_dump(quick_spec()) + "name: again\n", "application/yaml", 422,
     "duplicate key 'name'"),
    # Paths from a spec stay inside the data directory, refused at submission rather than failing a trial.
    ("pretrained-absolute", *_json(quick_spec(model={"name": "cnn", "pretrained": "/etc/passwd"})), 422,
     "relative to the data directory"),
    ("pretrained-dotdot", *_json(quick_spec(model={"name": "cnn", "pretrained": "weights/../../secret.pt"})), 422,
     "'..' is not allowed"),
    ("pretrained-home", *_json(quick_spec(model={"name": "cnn", "pretrained": "~/.ssh/id_rsa"})), 422,
     "relative to the data directory"),
    ("pretrained-windows-drive", *_json(quick_spec(model={"name": "cnn", "pretrained": "C:\\weights.pt"})), 422,
     "relative to the data directory"),
    ("pretrained-backslash-dotdot", *_json(quick_spec(model={"name": "cnn", "pretrained": "a\\..\\..\\b"})), 422,
     "'..' is not allowed"),
    ("imagefolder-absolute", *_json(quick_spec(dataset={"name": "imagefolder", "options": {"path": "/etc"}})), 422,
     "relative to the data directory"),
    ("imagefolder-dotdot", *_json(quick_spec(dataset={"name": "imagefolder", "options": {"path": "../../etc"}})), 422,
     "'..' is not allowed"),
    ("imagefolder-not-a-string", *_json(quick_spec(dataset={"name": "imagefolder", "options": {"path": ["a"]}})), 422,
     "non-empty path"),
    ("matrix-pretrained-dotdot", *_json(quick_spec(search=None, matrix={"model.pretrained": ["ok.pt", "../x.pt"]})), 422,
     "'..' is not allowed"),
    ("search-choice-imagefolder-dotdot", *_json(quick_spec(
        dataset={"name": "imagefolder", "options": {"path": "pets"}},
        search=_space(**{"dataset.options.path": {"type": "categorical", "choices": ["pets", "../../etc"]}}))), 422,
     "'..' is not allowed"),
]


@pytest.mark.parametrize(("body", "ctype", "code", "fragment"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused_with_a_message(
    shared: tuple[TestClient, Any, Settings], body: str, ctype: str, code: int, fragment: str
) -> None:
    secured, backends, _ = shared
    r = secured.post("/api/v1/sweeps", content=body, headers={**_auth(), "content-type": ctype})
    assert r.status_code == code, r.text[:2000]
    detail = r.json()["detail"]
    messages = " | ".join(d["msg"] for d in detail) if isinstance(detail, list) else detail
    assert fragment.lower() in messages.lower(), messages[:2000]
    assert _count(backends, Sweep) == 0 and _count(backends, Trial) == 0
    assert not Path("/tmp/vitsweep-pwned").exists(), "a YAML tag was executed"


def test_bad_input_count() -> None:
    """The closing note quotes this figure."""
    assert len(BAD_INPUTS) >= 40


def test_chunked_body_over_the_limit_is_cut_off(shared: tuple[TestClient, Any, Settings]) -> None:
    secured, backends, settings = shared

    def chunks() -> Iterator[bytes]:  # no content-length: the server must count while it reads
        yield b'{"name": "x", "description": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    r = secured.post("/api/v1/sweeps", content=chunks(), headers={**_auth(), "content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert str(settings.max_body_bytes) in r.json()["detail"]
    assert _count(backends, Sweep) == 0


@pytest.mark.parametrize("path", ["/api/v1/sweeps/2147483648", "/api/v1/sweeps/0/trials", "/api/v1/sweeps/-1",
                                  "/api/v1/compare?sweeps=99999999999", "/api/v1/compare?sweeps=1,x",
                                  "/api/v1/compare?sweeps=" + ",".join(["1"] * 101), "/api/v1/sweeps?limit=100000",
                                  "/api/v1/models?img_size=100000"])
def test_bad_query_and_path_values_are_422(shared: tuple[TestClient, Any, Settings], path: str) -> None:
    r = shared[0].get(path)
    assert r.status_code == 422, (path, r.status_code, r.text)
    assert r.json()["detail"]


def test_paths_are_confined_in_the_worker_too(tmp_path: Path) -> None:
    """A spec stored before these checks existed (or written to the database by hand) still cannot reach outside
    the data directory: the worker resolves both paths under it again."""
    from server.core.datapaths import confine
    from server.core.exceptions import PathEscapeError
    from worker.data import load_dataset
    from worker.retry import Outcome, RetryPolicy

    root = tmp_path / "data"
    root.mkdir()
    assert confine(root, "w/model.pt", "model.pretrained") == (root / "w" / "model.pt").resolve()
    for bad in ("/etc/passwd", "../x.pt", "w/../../x.pt"):
        with pytest.raises(PathEscapeError) as escaped:
            confine(root, bad, "model.pretrained")
        assert RetryPolicy().classify(escaped.value, attempts=1) is Outcome.fail  # a bad spec is never retried
        with pytest.raises(ValueError):
            load_dataset("imagefolder", root=root, img_size=8, path=bad)


def test_messages_name_the_bad_field(shared: tuple[TestClient, Any, Settings]) -> None:
    r = shared[0].post("/api/v1/sweeps", json=quick_spec(model={"name": "cnn", "pretrained": "/etc/passwd"}),
                     headers=_auth())
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "model", "pretrained"]
    assert re.search(r"model\.pretrained must be relative to the data directory, got absolute path '/etc/passwd'",
                     error["msg"])


def test_a_duplicate_key_is_named_by_its_path(shared: tuple[TestClient, Any, Settings]) -> None:
    text = "train:\n  lr: 0.001\n  epochs: 1\n  lr: 0.1\n" + yaml.safe_dump({k: v for k, v in quick_spec().items() if k != "train"})
    r = shared[0].post("/api/v1/sweeps", content=text, headers={**_auth(), "content-type": "application/yaml"})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "train", "lr"] and "duplicate key 'lr': train gives it more than once" in error["msg"]
