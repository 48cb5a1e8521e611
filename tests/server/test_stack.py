"""`vitsweep up` as a user runs it: the ports it is told, the UIs behind the API token when one is set (no open
port left behind them), and no MLflow job runner.

The stack is the real command in its own process; the dashboard is driven with the calls its own web page makes
(``/api/studies``, ``DELETE /api/studies/{id}``), MLflow with its REST API, and what they did is read back with
Optuna's and MLflow's own clients.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import optuna
import pytest
from mlflow import MlflowClient

from server.uiproxy import authorized
from tests.conftest import Templates
from tests.helpers import free_port, quick_spec

BIN = Path(sys.executable).parent
TOKEN = "stack-token-0123456789abcdef"


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found.extend(frontier)
    return found


def _listening_ports(pids: list[int]) -> set[int]:
    """TCP ports in LISTEN state on sockets that these processes hold open."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    log: Path
    home: Path
    api: str
    mlflow: str
    dashboard: str
    ports: set[int]


@pytest.fixture
def up(tmp_path: Path, templates: Templates) -> Iterator[Up]:
    """`vitsweep up` with a token and protected reads, on ports given on its command line."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(templates.store, home / "vitsweep.db")
    shutil.copyfile(templates.mlflow, home / "mlflow.db")
    ports = {"--api-port": free_port(), "--mlflow-port": free_port(), "--dashboard-port": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSWEEP_")}
    # The VITSWEEP_*_PORT variables point elsewhere: the options win.
    env.update(VITSWEEP_HOME=str(home), VITSWEEP_API_TOKEN=TOKEN, VITSWEEP_PROTECT_READS="true",
               VITSWEEP_POLL_SECONDS="0.5", VITSWEEP_API_PORT="1", VITSWEEP_MLFLOW_UI_PORT="1",
               VITSWEEP_DASHBOARD_PORT="1")
    log = tmp_path / "up.log"
    argv = [str(BIN / "vitsweep"), "up", "--slots-per-device", "1"]
    for option, port in ports.items():
        argv += [option, str(port)]
    proc = subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "Ctrl-C stops everything" not in log.read_text(errors="replace"):  # up printed all its addresses
            assert proc.poll() is None, f"up exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"up not up in 240 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        url = "http://127.0.0.1:{}".format
        yield Up(proc, log, home, url(ports["--api-port"]), url(ports["--mlflow-port"]),
                 url(ports["--dashboard-port"]), set(ports.values()))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                for pid in _tree(proc.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.wait()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


BEARER = {"Authorization": f"Bearer {TOKEN}"}
WRONG = [{}, {"Authorization": "Bearer wrong-token"}, _basic("admin", "wrong-token"), _basic(TOKEN, "")]


@pytest.mark.slow
def test_up_puts_the_uis_behind_the_token(up: Up) -> None:
    out = up.log.read_text()
    assert up.mlflow in out and up.dashboard in out and "token" in out  # the addresses, and how to sign in
    pids = _tree(up.proc.pid)
    # Nothing else listens: MLflow's own server is on a Unix socket in a private directory, behind the proxy.
    assert _listening_ports(pids) == up.ports
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() for pid in pids
                if Path(f"/proc/{pid}/cmdline").exists()]
    assert not [c for c in cmdlines if "huey" in c], "MLflow's job runner was started"
    print(f"stack: {len(pids)} processes, {_rss_mib(pids):.0f} MiB resident")

    sweep = httpx.post(f"{up.api}/api/v1/sweeps", json=quick_spec(), headers=BEARER, timeout=60)
    assert sweep.status_code == 201, sweep.text
    study_name = sweep.json()["study_name"]
    storage = f"sqlite:///{up.home / 'vitsweep.db'}"

    # Optuna dashboard: every request without the token is refused, with a challenge a browser answers.
    for path in ("/", "/dashboard", "/api/studies"):
        for headers in WRONG:
            r = httpx.get(up.dashboard + path, headers=headers, timeout=30)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert r.headers["www-authenticate"].startswith("Basic realm=")
            assert study_name not in r.text
    listed = httpx.get(f"{up.dashboard}/api/studies", headers=_basic("me", TOKEN), timeout=30)
    assert listed.status_code == 200, listed.text
    study_id = next(s["study_id"] for s in listed.json()["study_summaries"] if s["study_name"] == study_name)
    assert httpx.get(f"{up.dashboard}/dashboard", headers=BEARER, timeout=30).status_code == 200
    for headers in WRONG:
        deleted = httpx.delete(f"{up.dashboard}/api/studies/{study_id}", headers=headers, timeout=30)
        assert deleted.status_code == 401
    assert study_name in optuna.get_all_study_names(storage)  # the live sweep's study is still there

    # MLflow's UI: the same.
    tracking = MlflowClient(f"sqlite:///{up.home / 'mlflow.db'}")
    for headers in WRONG:
        created = httpx.post(f"{up.mlflow}/api/2.0/mlflow/experiments/create", json={"name": "intruder"},
                             headers=headers, timeout=30)
        assert created.status_code == 401
        assert httpx.get(f"{up.mlflow}/", headers=headers, timeout=30).status_code == 401
    assert tracking.get_experiment_by_name("intruder") is None
    found = httpx.get(f"{up.mlflow}/api/2.0/mlflow/experiments/search", params={"max_results": 10},
                      headers=_basic("me", TOKEN), timeout=30)
    assert found.status_code == 200 and "vitsweep" in {e["name"] for e in found.json()["experiments"]}
    page = httpx.get(f"{up.mlflow}/", headers=BEARER, timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    # With the token, the UI works as MLflow's own: a write goes through and is read back by MLflow's client.
    made = httpx.post(f"{up.mlflow}/api/2.0/mlflow/experiments/create", json={"name": "by-the-owner"},
                      headers=BEARER, timeout=30)
    assert made.status_code == 200, made.text
    assert tracking.get_experiment_by_name("by-the-owner") is not None

    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(90) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "a service outlived the stack"


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    """A taken port is named with the option that moves it, before anything starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSWEEP_")}
    env["VITSWEEP_HOME"] = str(tmp_path / "home")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([str(BIN / "vitsweep"), "up", "--no-ui", "--api-port", str(port)], env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"api port {port}" in done.stderr and "--api-port" in done.stderr, done.stderr
    assert not (tmp_path / "home" / "logs" / "api.log").exists()  # nothing was started


def test_token_check() -> None:
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(f"bearer  {TOKEN} ", TOKEN)
    assert authorized(_basic("anyone", TOKEN)["Authorization"], TOKEN)
    assert authorized(_basic("", f"{TOKEN}")["Authorization"], TOKEN)
    for header in (None, "", "Bearer", f"Bearer {TOKEN}x", f"Token {TOKEN}", "Basic !!!not-base64",
                   "Basic " + base64.b64encode(TOKEN.encode()).decode(),  # no user:password pair
                   _basic(TOKEN, "nope")["Authorization"]):
        assert not authorized(header, TOKEN), header
    assert not authorized("Bearer ", "")  # no token configured: nothing passes this check
