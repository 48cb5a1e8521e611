"""The API enforces sweep deadlines and trial leases on its own: with no worker running, a sweep past its timeout
ends and a trial whose worker died is requeued, then failed once it is out of attempts.

``vitsweep server`` runs as its own process on each backend; the dead worker is the real claim statement with
nobody heartbeating afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.core import queue
from server.core.config import Settings
from tests.helpers import answers, free_port, quick_spec

BIN = Path(sys.executable).parent
LEASE = 0.5


@dataclass
class Api:
    """The API process, its address and its log."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def until(self, ready: Callable[[], Any], timeout: float = 60) -> Any:
        """Poll ``ready`` until it returns something true (which is returned), while the API keeps running."""
        deadline = time.monotonic() + timeout
        while True:
            got = ready()
            if got:
                return got
            assert self.proc.poll() is None, f"the API exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not reached in {timeout:.0f}s:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"{self.url}/api/v1/sweeps", json=spec, timeout=60)
        assert r.status_code == 201, r.text
        return r.json()

    def sweep(self, sweep_id: int) -> dict[str, Any]:
        return httpx.get(f"{self.url}/api/v1/sweeps/{sweep_id}", timeout=30).json()

    def trials(self, sweep_id: int) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/api/v1/sweeps/{sweep_id}/trials", timeout=30).json()


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[Api]:
    """`vitsweep server` on the test's store, enforcing every 0.3 s, and no worker anywhere."""
    port = free_port()
    env = {**os.environ, "VITSWEEP_API_PORT": str(port), "VITSWEEP_MAINTENANCE_SECONDS": "0.3",
           "VITSWEEP_MAX_ATTEMPTS": "2"}
    log = tmp_path / "api.log"
    proc = subprocess.Popen([str(BIN / "vitsweep"), "server"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = Api(f"http://127.0.0.1:{port}", proc, log)
    try:
        server.until(lambda: answers(f"{server.url}/healthz"), 120)
        yield server
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_server_alone_ends_timed_out_sweeps_and_reaps_dead_workers(api: Api, backends: Any) -> None:
    timed = api.submit(quick_spec(search={**quick_spec()["search"], "n_trials": 3, "timeout": 1.5}))
    assert timed["state"] == "running" and timed["deadline"]

    # A sweep past its timeout, with no worker: the server cancels its queued trials and ends it.
    ended = api.until(lambda: (s := api.sweep(timed["id"]))["state"] == "completed" and s)
    trials = api.trials(timed["id"])
    assert [t["state"] for t in trials] == ["cancelled"] * 3
    assert all("timeout" in t["error"] and t["attempts"] == 0 for t in trials)
    assert ended["counts"].get("cancelled") == 3
    parent = backends.tracker.client.get_run(timed["mlflow_run_id"])  # its MLflow run is closed too
    assert parent.info.status == "FINISHED" and parent.data.tags["vitsweep.state"] == "completed"

    # A worker claims a trial and dies (nobody renews the lease): the server requeues it, then fails it once it
    # has used its two attempts.
    other = api.submit(quick_spec(search={**quick_spec()["search"], "n_trials": 1}))
    first = queue.claim(backends.sessions, "dead-host:1:cpu:0", "cpu", LEASE)
    assert first is not None and first.sweep_id == other["id"]
    requeued = api.until(lambda: (t := api.trials(other["id"])[0])["state"] == "queued" and t)
    assert requeued["error"] == "lease expired; requeued" and requeued["attempts"] == 1
    second = queue.claim(backends.sessions, "dead-host:2:cpu:0", "cpu", LEASE)
    assert second is not None and second.row_id == first.row_id
    failed = api.until(lambda: (t := api.trials(other["id"])[0])["state"] == "failed" and t)
    assert "worker lost 2 times" in failed["error"]
    assert api.sweep(other["id"])["state"] == "completed"  # its only trial ended: the sweep is over
