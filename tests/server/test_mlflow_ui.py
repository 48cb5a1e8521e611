"""The MLflow address the CLI prints, opened in MLflow's own UI (``mlflow server``) by headless Chromium (Debian's
`chromium`, installed by .ci/run): it lands on the runs table of the sweep's experiment, listing its runs, not
on MLflow 3's empty GenAI overview. A screenshot (``mlflow-runs.png`` under the test's tmp_path; run with
``--basetemp`` to find it) is left for a human to look at."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server.cli.services import mlflow_link
from tests.helpers import free_port, quick_spec
from worker.worker import Worker, WorkerOptions

BIN = Path(sys.executable).parent


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package before the tests")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it and runs this check")
    return found


def _dom(chromium: str, url: str, profile: Path, shot: Path | None = None) -> str:
    """The DOM MLflow's single-page app built for ``url`` (its scripts ran, its API calls answered)."""
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--window-size=1500,900"]
    if shot is not None:
        subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    (profile.parent / f"{profile.name}.html").write_text(dom.stdout)
    return dom.stdout


def _text(dom: str) -> str:
    """The page's text, tags dropped and spaces collapsed (React splits sentences into several text nodes)."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_printed_mlflow_link_lists_the_sweeps_runs(client, settings, backends, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chromium = _chromium()
    other = client.post("/api/v1/sweeps", json=quick_spec(name="other", search={**quick_spec()["search"], "n_trials": 1}))
    sweep = client.post("/api/v1/sweeps", json=quick_spec(name="linked", search={**quick_spec()["search"], "n_trials": 2}))
    Worker(settings, WorkerOptions(device="cpu", burst=True), backends=backends).run()
    final = client.get(f"/api/v1/sweeps/{sweep.json()['id']}").json()
    trials = client.get(f"/api/v1/sweeps/{final['id']}/trials").json()
    names = [backends.tracker.client.get_run(t["mlflow_run_id"]).info.run_name for t in trials]
    other_run = backends.tracker.client.get_run(other.json()["mlflow_run_id"]).info.run_name

    port = free_port()
    ui = settings.model_copy(update={"mlflow_ui_url": f"http://127.0.0.1:{port}"})
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", settings.tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        # After a sweep (`vitsweep demo`): that sweep's runs, the parent and its trials, and no other sweep's.
        link = mlflow_link(ui, final)
        assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/{final['mlflow_experiment_id']}/runs?")
        dom = _dom(chromium, link, tmp_path / "profile", tmp_path / "mlflow-runs.png")
        # MLflow nests the trials' runs under the sweep's (collapsed): the table counts all three.
        assert f">linked#{final['id']}<" in dom, dom[-3000:]
        assert f"{1 + len(names)} matching runs" in _text(dom), _text(dom)[-3000:]
        assert other_run not in dom and "Model training" in dom
        # `vitsweep up` (no sweep yet to filter by): every run of the experiment.
        # A browser of its own: MLflow's UI keeps the last search of an experiment in the browser's storage.
        everything = _dom(chromium, mlflow_link(ui), tmp_path / "fresh-profile")
        assert f">linked#{final['id']}<" in everything and f">{other_run}<" in everything
        assert f"{2 + 1 + len(names)} matching runs" in _text(everything), _text(everything)[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # its workers can outlive a SIGTERM for a while
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
