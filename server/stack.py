"""The embedded stack on one machine: API, worker supervisor, MLflow UI and Optuna dashboard as child processes.

Each is a real entry point (``vitsweep server``, ``vitsweep worker``, ``mlflow server``, ``vitsweep dashboard``),
so the same commands run unchanged in docker-compose or on many machines. With ``VITSWEEP_API_TOKEN`` set, the
UIs are behind the same token (:mod:`server.uiproxy`): the dashboard checks it itself, and MLflow's UI listens on
a Unix socket in a private directory with ``vitsweep ui-proxy`` on its port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.core.config import Settings


@dataclass
class Service:
    name: str
    argv: list[str]
    url: str | None
    health: str | None = None  # path polled until it answers without error
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's environment
    port: int | None = None  # the TCP port it binds on 127.0.0.1 (checked free before anything starts)
    health_headers: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env={**env, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float) -> None:
        if self.health is None or self.url is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode if self.proc else '?'}; see {self.log_path}")
            try:
                if httpx.get(self.url + self.health, headers=self.health_headers, timeout=2).status_code < 400:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not answer at {self.url}{self.health} within {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float) -> None:
        """SIGTERM to the service's process group, then SIGKILL to what is left of it after ``timeout`` seconds.
        Returns once every process of the group is gone, not only its leader: a server's own workers (MLflow's
        uvicorn, a supervisor's slots) may still be unwinding when the process that started them has exited."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            self.proc.poll()
            return
        deadline = time.monotonic() + timeout
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        if not _group_gone(pgid, deadline):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()  # the leader reaped, so that only live members (or their zombies) keep the group
            _group_gone(pgid, time.monotonic() + 10.0)
        self.proc.wait()


def _group_gone(pgid: int, deadline: float) -> bool:
    """Wait until no process of group ``pgid`` is left (or ``deadline``, a ``time.monotonic()`` instant)."""
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # a member changed its credentials: it is not ours to wait for
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _bin(name: str) -> str:
    """An entry point of this environment (next to the running Python), else from PATH."""
    here = Path(sys.executable).parent / name
    found = here if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed in this environment")
    return str(found)


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` already (a second stack, another program)."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


# MLflow's job runner (huey consumers for its GenAI jobs and periodic tasks) is about 2 GB resident; vitsweep
# runs no MLflow jobs. MLflow's own switch turns it off.
MLFLOW_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass
class Stack:
    settings: Settings
    devices: str = "cpu"
    slots_per_device: int | str = 1  # or "auto"
    ui: bool = True
    services: list[Service] = field(default_factory=list)
    _private: Path | None = None

    def plan(self) -> list[Service]:
        s = self.settings
        token = s.api_token.get_secret_value() if s.api_token else ""
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        services = [
            Service(
                "api",
                [_bin("vitsweep"), "server", "--host", s.api_host, "--port", str(s.api_port)],
                s.base_url,
                "/healthz",
                port=s.api_port,
            ),
            Service(
                "worker",
                [_bin("vitsweep"), "worker", "--devices", self.devices, "--slots-per-device", str(self.slots_per_device)],
                None,
            ),
        ]
        if self.ui:
            if not s.tracking_uri.startswith("http"):
                mlflow = [_bin("mlflow"), "server", "--backend-store-uri", s.tracking_uri, "--host", "127.0.0.1",
                          "--port", str(s.mlflow_ui_port), "--workers", "1"]
                if token:  # MLflow on a private socket, the token-checking proxy on its port
                    sock = self.private_dir() / "mlflow.sock"
                    services.append(Service("mlflow", [*mlflow, "--uvicorn-opts", f"--uds {sock}"], None,
                                            env=MLFLOW_ENV))
                    services.append(Service(
                        "mlflow-proxy",
                        [_bin("vitsweep"), "ui-proxy", "--socket", str(sock), "--host", "127.0.0.1",
                         "--port", str(s.mlflow_ui_port), "--name", "MLflow"],
                        s.mlflow_ui, "/health", port=s.mlflow_ui_port, health_headers=auth,
                    ))
                else:
                    services.append(Service("mlflow", mlflow, s.mlflow_ui, "/health", env=MLFLOW_ENV,
                                            port=s.mlflow_ui_port))
            services.append(
                Service(
                    "optuna-dashboard",
                    [_bin("vitsweep"), "dashboard", "--host", "127.0.0.1", "--port", str(s.dashboard_port)],
                    s.dashboard,
                    "/",
                    port=s.dashboard_port,
                    health_headers=auth,
                )
            )
        return services

    def private_dir(self) -> Path:
        """A directory only this user can enter (mode 0700), for the UIs' Unix sockets; removed by :meth:`stop`."""
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="vitsweep-"))
        return self._private

    def check_ports(self, services: list[Service]) -> None:
        """Refuse to start when a port is taken, naming it and the option that moves it."""
        option = {"api": "--api-port", "mlflow": "--mlflow-port", "mlflow-proxy": "--mlflow-port",
                  "optuna-dashboard": "--dashboard-port"}
        taken = [f"{svc.name} port {svc.port} (choose another with {option.get(svc.name, '--port')})"
                 for svc in services if svc.port is not None and port_in_use("127.0.0.1", svc.port)]
        if taken:
            raise RuntimeError("something already listens on " + "; ".join(taken))

    def start(self, timeout: float = 120.0) -> None:
        """Start the API first (it migrates the databases), then everything else."""
        s = self.settings
        env = dict(os.environ)
        # The children read the same settings: the API's report links and the CLI find the ports chosen here.
        env.update({"VITSWEEP_HOME": str(s.home), "VITSWEEP_API_PORT": str(s.api_port),
                    "VITSWEEP_MLFLOW_UI_PORT": str(s.mlflow_ui_port), "VITSWEEP_DASHBOARD_PORT": str(s.dashboard_port)})
        s.ensure_home()
        log_dir = s.home / "logs"
        planned = self.plan()
        try:
            self.check_ports(planned)
            api, rest = planned[0], planned[1:]
            api.start(env, log_dir)
            self.services.append(api)
            api.wait_healthy(timeout)
            for service in rest:
                service.start(env, log_dir)
                self.services.append(service)
            for service in rest:
                service.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def dead(self) -> list[Service]:
        return [s for s in self.services if not s.alive()]

    def stop(self, timeout: float = 60.0) -> None:
        """Workers first (their trials go back to the queue with a checkpoint), then the rest."""
        for service in sorted(self.services, key=lambda s: s.name != "worker"):
            service.stop(timeout if service.name == "worker" else 10.0)
        self.services.clear()
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
