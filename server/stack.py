"""The embedded stack on one machine: API, worker supervisor, MLflow UI and Optuna dashboard as child processes.

Each is the real entry point (uvicorn, ``vitsweep worker``, ``mlflow server``, ``optuna-dashboard``), so
the same commands run unchanged in docker-compose or on many machines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
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
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

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
                if httpx.get(self.url + self.health, timeout=2).status_code < 400:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not answer at {self.url}{self.health} within {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if not self.alive():
            return
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _bin(name: str) -> str:
    """An entry point of this environment (next to the running Python), else from PATH."""
    here = Path(sys.executable).parent / name
    found = here if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed in this environment")
    return str(found)


@dataclass
class Stack:
    settings: Settings
    devices: str = "cpu"
    slots_per_device: int | str = 1  # or "auto"
    ui: bool = True
    services: list[Service] = field(default_factory=list)

    def plan(self) -> list[Service]:
        s = self.settings
        services = [
            Service(
                "api",
                [_bin("vitsweep"), "server", "--host", s.api_host, "--port", str(s.api_port)],
                s.base_url,
                "/healthz",
            ),
            Service(
                "worker",
                [_bin("vitsweep"), "worker", "--devices", self.devices, "--slots-per-device", str(self.slots_per_device)],
                None,
            ),
        ]
        if self.ui:
            if not s.tracking_uri.startswith("http"):
                services.append(
                    Service(
                        "mlflow",
                        [_bin("mlflow"), "server", "--backend-store-uri", s.tracking_uri, "--host", "127.0.0.1",
                         "--port", str(s.mlflow_ui_port), "--workers", "1"],
                        s.mlflow_ui,
                        "/health",
                    )
                )
            services.append(
                Service(
                    "optuna-dashboard",
                    [_bin("optuna-dashboard"), s.db_url, "--host", "127.0.0.1", "--port", str(s.dashboard_port)],
                    s.dashboard,
                    "/",
                )
            )
        return services

    def start(self, timeout: float = 120.0) -> None:
        """Start the API first (it migrates the databases), then everything else."""
        env = dict(os.environ)
        env["VITSWEEP_HOME"] = str(self.settings.home)
        self.settings.ensure_home()
        log_dir = self.settings.home / "logs"
        planned = self.plan()
        try:
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
