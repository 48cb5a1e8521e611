"""Hostile submissions against the API running as ``vitsweep server`` in a process of its own, as deployed:
a spec whose models are too costly to build, a grid search past the trial limit, and lone surrogates. Each is
answered with a 4xx naming the problem, nothing is stored, and the server keeps serving everyone else
(``/healthz`` within a second while a costly spec is being checked).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Templates
from tests.helpers import free_port, quick_spec

BIN = Path(sys.executable).parent
TOKEN = "hostile-input-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECK_SECONDS = 2  # the server's VITSWEEP_SPEC_CHECK_SECONDS: a costly spec is stopped after this long


class Api:
    """The running server: its base URL, port and log."""

    def __init__(self, port: int, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.log, self.proc = port, log, proc
        self.url = f"http://127.0.0.1:{port}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, templates: Templates) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("hostile")
    shutil.copyfile(templates.store, home / "vitsweep.db")
    shutil.copyfile(templates.mlflow, home / "mlflow.db")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSWEEP_")}
    env.update(VITSWEEP_HOME=str(home), VITSWEEP_API_PORT=str(port), VITSWEEP_API_TOKEN=TOKEN,
               VITSWEEP_SPEC_CHECK_SECONDS=str(CHECK_SECONDS), VITSWEEP_SPEC_CHECK_MEMORY_MB="1024")
    log = home / "api.log"
    proc = subprocess.Popen([str(BIN / "vitsweep"), "server"], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Api(port, log, proc)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the API exited:\n{server.tail()}"
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the API did not start:\n{server.tail()}"
            time.sleep(0.3)
        # A first valid submission: the spec checks' fork server is up (it imports torch) before any test times.
        r = httpx.post(f"{server.url}/api/v1/sweeps", json=quick_spec(name="warm-up"), headers=AUTH, timeout=180)
        assert r.status_code == 201, r.text
        yield server
    finally:
        proc.kill()
        proc.wait(30)


def _sweeps(api: Api) -> list[str]:
    r = httpx.get(f"{api.url}/api/v1/sweeps", params={"limit": 500}, timeout=10)
    assert r.status_code == 200, r.text
    return [s["name"] for s in r.json()["items"]]


def _arch_search(name: str, high: int) -> dict[str, Any]:
    return quick_spec(
        name=name,
        model={"name": "vit", "arch": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}},
        search={**quick_spec()["search"], "space": {"model.arch.num_layers": {"type": "int", "low": 1, "high": high}}},
    )


@pytest.mark.slow
def test_a_costly_architecture_is_refused_in_time_and_others_are_served(api: Api) -> None:
    """Building 60,000 layers on the meta device takes minutes (and gigabytes): the check is stopped at its
    budget and the spec refused, naming the path; meanwhile /healthz answers within a second and another
    submission is checked and stored."""
    url = f"{api.url}/api/v1/sweeps"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        costly = pool.submit(httpx.post, url, json=_arch_search("costly", 60_000), headers=AUTH, timeout=60)
        time.sleep(0.5)  # the costly check is under way
        legit = pool.submit(httpx.post, url, json=quick_spec(name="legit"), headers=AUTH, timeout=60)
        probes = []
        while not costly.done():
            t0 = time.monotonic()
            r = httpx.get(f"{api.url}/healthz", timeout=5)
            probes.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
            assert probes[-1] < 1.0, f"/healthz took {probes[-1]:.2f}s while a spec was being checked"
            time.sleep(0.1)
        r = costly.result()
        elapsed = time.monotonic() - started
        assert legit.result().status_code == 201, legit.result().text
    assert len(probes) >= 3, probes
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "search", "space", "model.arch.num_layers"], error
    assert "checking the spec" in error["msg"] and "num_layers': 60000" in error["msg"], error["msg"]
    assert elapsed < CHECK_SECONDS + 30, elapsed
    print(f"\ncostly architecture: {r.status_code} after {elapsed:.1f}s; /healthz meanwhile at most {max(probes):.3f}s")

    # An absurd bound is refused before anything is built.
    t0 = time.monotonic()
    r = httpx.post(url, json=_arch_search("absurd", 2**53), headers=AUTH, timeout=60)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "search", "space", "model.arch.num_layers"], error
    assert "at most 65536" in error["msg"], error["msg"]
    print(f"num_layers up to 2**53: {r.status_code} after {time.monotonic() - t0:.2f}s")
    names = _sweeps(api)
    assert "legit" in names and "costly" not in names and "absurd" not in names, names


@pytest.mark.slow
def test_a_grid_search_is_counted_before_it_is_built(api: Api) -> None:
    """The grid sampler's combinations count against the trial limit as a matrix's do, before any is made."""
    url = f"{api.url}/api/v1/sweeps"

    def grid(name: str, *sizes: int) -> dict[str, Any]:
        paths = ("train.seed", "train.batch_size", "train.epochs")
        space = {p: {"type": "categorical", "choices": list(range(1, n + 1))} for p, n in zip(paths[: len(sizes)], sizes, strict=True)}
        return quick_spec(name=name, search={"sampler": "grid", "n_trials": 1, "space": space})

    for name, sizes, total in (("grid-150x150", (150, 150), 22_500), ("grid-100x100x100", (100, 100, 100), 10**6)):
        body = json.dumps(grid(name, *sizes))
        t0 = time.monotonic()
        r = httpx.post(url, content=body, headers={**AUTH, "content-type": "application/json"}, timeout=60)
        assert r.status_code == 422, r.text[:500]
        msg = r.json()["detail"][0]["msg"]
        assert f"more than 10000 combinations: {' x '.join(map(str, sizes))} = {total}" in msg, msg
        print(f"\n{name} ({len(body)} bytes): {r.status_code} after {time.monotonic() - t0:.2f}s")
    # The same axes as a matrix get the same answer; a grid at the limit is taken.
    r = httpx.post(url, json=quick_spec(name="matrix", search=None, matrix={"train.seed": list(range(150)),
                                                                           "train.batch_size": list(range(1, 151))}),
                   headers=AUTH, timeout=60)
    assert r.status_code == 422 and "more than 10000 combinations" in r.text, r.text
    assert not {"grid-150x150", "grid-100x100x100", "matrix"} & set(_sweeps(api))


def _exchange(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    headers = {**AUTH, "content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_a_lone_surrogate_is_a_422_and_the_connection_stays_open(api: Api) -> None:
    """JSON's ``"\\ud800"`` decodes to a string UTF-8 cannot carry: refused with a 422 (which quotes it escaped),
    on a keep-alive connection that then serves the next request."""
    spec_text = json.dumps(quick_spec(name="surrogate"))
    bodies = {
        "in a value": spec_text.replace('"surrogate"', '"\\ud800"'),
        "in a key": spec_text.replace('"num_samples"', '"\\udfff"'),
        "in the description": spec_text[:-1] + ', "description": "a \\ud83d b"}',
    }
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    try:
        for where, body in bodies.items():
            status, answer = _exchange(conn, "POST", "/api/v1/sweeps", body.encode())
            assert status == 422, (where, answer)
            assert "lone surrogate" in json.dumps(answer), (where, answer)
            sock = conn.sock
            assert sock is not None, f"the server closed the connection after the 422 for a surrogate {where}"
            assert _exchange(conn, "GET", "/healthz")[0] == 200
            assert conn.sock is sock, "the connection was replaced"
        # FastAPI's own validation quotes the input too: a body field of another route.
        status, answer = _exchange(conn, "POST", "/api/v1/sweeps/1/trials", b'{"n": "\\ud800"}')
        assert status == 422, answer
        assert answer["detail"][0]["input"] == "\\ud800", answer
        assert conn.sock is not None and _exchange(conn, "GET", "/healthz")[0] == 200
    finally:
        conn.close()
    assert "surrogate" not in _sweeps(api)
