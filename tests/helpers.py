"""Small specs for tests: quick to validate and, where trained, quick to train."""

from __future__ import annotations

import copy
from typing import Any

QUICK: dict[str, Any] = {
    "name": "quick",
    "dataset": {"name": "synthetic", "img_size": 8, "options": {"num_samples": 64, "num_classes": 4}},
    "model": {"name": "cnn"},
    "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "svc_probe": False, "plots": False},
    "search": {"sampler": "random", "n_trials": 3, "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
}


def quick_spec(**changes: Any) -> dict[str, Any]:
    """QUICK with top-level sections replaced or updated: quick_spec(search=None, matrix={...})."""
    spec = copy.deepcopy(QUICK)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        elif isinstance(value, dict) and isinstance(spec.get(key), dict) and key not in ("matrix",):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def mlflow_unreachable_error() -> Exception:
    """The exception MLflow's client really raises when its tracking server cannot be reached: a call to a port
    nobody listens on, with MLflow's own retries turned off for the one call."""
    import os
    import socket

    from mlflow import MlflowClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    saved = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        MlflowClient(f"http://127.0.0.1:{port}").get_experiment_by_name("unreachable")
    except Exception as exc:  # the MlflowException wrapping the transport's ConnectionError
        return exc
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = saved
    raise AssertionError(f"nothing listens on port {port}, yet MLflow answered")


def train_with_hook(settings: Any, hook: Any) -> Any:
    """The real training (``SpecTrainer``) with ``hook(job, report)`` called at every epoch boundary, just
    before the runner's own epoch callback: to act at a chosen point of a real trial (cancel it, move its
    sweep's deadline, watch the store)."""
    from dataclasses import replace

    from worker.training import SpecTrainer

    real = SpecTrainer(settings.datasets_dir, settings.download)

    def train(job: Any) -> Any:
        def on_epoch(report: Any) -> None:
            hook(job, report)
            job.on_epoch(report)

        return real(replace(job, on_epoch=on_epoch))

    return train


def blind_client(settings: Any, backends: Any) -> Any:
    """A TestClient of an API that does not see the workers' data directory (``VITSWEEP_CHECK_DATA=false``): it
    queues sweeps whose data is missing, for tests of what the worker then does."""
    from fastapi.testclient import TestClient

    from server.main import create_app

    return TestClient(create_app(settings.model_copy(update={"check_data": False}), backends))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server of one test's own (``initdb`` into a temporary folder, its own port), for tests that
    stop and start the server: the machine's shared server and every other test's databases are never touched.

    Runs the server as the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root).
    """

    def __init__(self) -> None:
        import glob
        import os
        import shutil
        import tempfile

        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        initdb = shutil.which("initdb") or (f"{bindirs[-1]}/initdb" if bindirs else None)
        if initdb is None:
            raise RuntimeError("PostgreSQL's initdb is not installed (Debian: postgresql)")
        self.bindir = os.path.dirname(initdb)
        self.folder = tempfile.mkdtemp(prefix="vitsweep-pg-")
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, user="postgres")
        self._run("initdb", "-D", f"{self.folder}/data", "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        subprocess.run([*self._as, f"{self.bindir}/{tool}", *args], check=True, capture_output=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", f"{self.folder}/data", "-o", options, "-l", f"{self.folder}/log", "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", f"{self.folder}/data", "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def close(self) -> None:
        import shutil

        try:
            self.stop()
        except Exception:  # already stopped
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


class WorkerProcesses:
    """``vitsweep worker`` processes (one CPU slot each, ``env`` added to the environment), each logging to a file
    of its own under ``folder``; :meth:`stop` ends them (SIGTERM, then SIGKILL after a minute)."""

    def __init__(self, folder: Any, env: dict[str, str] | None = None) -> None:
        self.folder, self.env = folder, env or {}
        self.procs: list[tuple[Any, Any]] = []

    def start(self, name: str, *args: str) -> Any:
        """Start one (``args`` added to its command line, e.g. ``--burst``); returns its log file."""
        import os
        import subprocess
        import sys
        from pathlib import Path

        log = Path(self.folder) / f"{name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", **self.env}
        with log.open("wb") as out:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "vitsweep"), "worker", "--devices", "cpu", *args],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return log

    def wait(self, timeout: float) -> list[int]:
        """Wait for every process to exit on its own (``--burst``); their exit codes."""
        return [proc.wait(timeout) for proc, _ in self.procs]

    def output(self) -> str:
        """The tail of every log, for assertion messages."""
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for _, log in self.procs)

    def stop(self) -> None:
        import signal
        import subprocess

        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now (a server that is not up yet, or not reachable, does not)."""
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
