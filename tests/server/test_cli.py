"""The `vitsweep` command line against a real API server process, and the README's demo command itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from server.cli import app
from tests.helpers import free_port, quick_spec

BIN = Path(sys.executable).parent


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("VITSWEEP_"):
            monkeypatch.delenv(key)
    port = free_port()
    env = {
        "VITSWEEP_HOME": str(tmp_path / "home"),
        "VITSWEEP_API_PORT": str(port),
        "VITSWEEP_POLL_SECONDS": "0.2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def api(cli_env: dict[str, str]) -> Iterator[str]:
    """`vitsweep server` as its own process."""
    url = f"http://127.0.0.1:{cli_env['VITSWEEP_API_PORT']}"
    proc = subprocess.Popen([str(BIN / "vitsweep"), "server"], env={**os.environ, **cli_env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_submit_wait_status_compare(api: str, cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(quick_spec(name="cli-sweep")))
    worker = None
    try:
        submitted = runner.invoke(app, ["submit", str(spec_file)])
        assert submitted.exit_code == 0, submitted.output
        sweep_id = int(re.search(r"sweep (\d+)", submitted.output).group(1))  # type: ignore[union-attr]
        worker = subprocess.Popen([str(BIN / "vitsweep"), "worker", "--burst"], env={**os.environ, **cli_env},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker.wait(300)
        status = runner.invoke(app, ["status", str(sweep_id)])
        assert status.exit_code == 0 and "completed" in status.output, status.output
        listing = runner.invoke(app, ["status"])
        assert "cli-sweep" in listing.output
        md = runner.invoke(app, ["compare", str(sweep_id), "--format", "md"])
        assert md.exit_code == 0
        rows = [line for line in md.output.splitlines() if line.startswith(f"| {sweep_id} |")]
        assert len(rows) == 3  # every trial listed
        data = json.loads(runner.invoke(app, ["compare", str(sweep_id), "--format", "json"]).output)
        assert sorted(r["trial"] for r in data) == [0, 1, 2] and all(r["state"] == "completed" for r in data)
        assert all(0.0 <= r["best_val_acc"] <= 1.0 and r["param_count"] > 0 for r in data)
        csv_out = runner.invoke(app, ["compare", str(sweep_id), "--format", "csv"]).output
        assert csv_out.splitlines()[0].startswith("sweep_id,") and len(csv_out.strip().splitlines()) == 4
        table = runner.invoke(app, ["compare", str(sweep_id)])
        assert table.exit_code == 0 and "comparison" in table.output
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()


def test_client_errors_are_clear(api: str, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(quick_spec(model={"name": "vitt"})))
    result = runner.invoke(app, ["submit", str(bad)])
    assert result.exit_code == 1 and "422" in result.output and "model.name" in result.output
    assert runner.invoke(app, ["submit", str(tmp_path / "missing.yaml")]).exit_code == 2
    missing = runner.invoke(app, ["status", "4242"])
    assert missing.exit_code == 1 and "404" in missing.output
    assert runner.invoke(app, ["compare", "1", "--format", "xml"]).exit_code == 2


def test_cli_without_server_says_so(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1 and "cannot reach the vitsweep API" in result.output


def test_catalog_and_db_commands(api: str, cli_env: dict[str, str]) -> None:
    """The catalog comes from the API, like every client command's answer; migrations run locally."""
    runner = CliRunner()
    models = json.loads(runner.invoke(app, ["models", "--json", "--img-size", "32"]).output)
    assert {"vit", "cnn", "resnet18"} <= {m["name"] for m in models}
    datasets = runner.invoke(app, ["datasets"], terminal_width=200).output
    assert "digits" in datasets
    # every preset with its kornia ops
    for text in ("standard", "RandomCrop(size=[32, 32], padding=4, padding_mode=reflect)", "RandomHorizontalFlip()",
                 "perceiver", "random_apply: [1, 4] (per image)", "TrivialAugment()", "RandomMixUpV2"):
        assert text in datasets, datasets
    from alembic.script import ScriptDirectory

    import migrations

    head = ScriptDirectory.from_config(migrations.alembic_config("sqlite://")).get_current_head()
    assert f"revision {head}" in runner.invoke(app, ["db", "upgrade"]).output
    assert runner.invoke(app, ["demo", "--print-spec"]).output.startswith("# The embedded default")


@pytest.mark.slow
def test_readme_demo_command(cli_env: dict[str, str], tmp_path: Path) -> None:
    """README command (1)'s job: the embedded stack, the digits sweep, the table and the addresses."""
    env = {
        **os.environ, **cli_env,
        "VITSWEEP_MLFLOW_UI_PORT": str(free_port()), "VITSWEEP_DASHBOARD_PORT": str(free_port()),
    }
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "vitsweep"), "demo", "--no-keep"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    best = float(re.search(r"val_acc = ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    assert best >= 0.90, out[-3000:]
    for address in ("API docs", "MLflow UI", "Optuna dashboard"):
        assert address in out
    # The MLflow address is the runs table of the demo sweep's experiment, on one line (no wrapping).
    link = re.search(r"^MLflow UI\s+(\S+)$", out, flags=re.M)
    assert link is not None and re.fullmatch(
        r"http://127\.0\.0\.1:\d+/#/experiments/\d+/runs\?workflowType=machine_learning&searchFilter=\S+", link.group(1)
    ), out[-2000:]
    assert "comparison" in out
    # The comparison table lists the sweep's six trials, each finished (completed or pruned by the median rule).
    table = out[out.index("comparison"):]
    rows = re.findall(r"^\s*\d+\s+\d+\s+vit\s+digits\b.*\b(completed|pruned)\b", table, flags=re.M)
    assert len(rows) == 6, table[:3000]
    print(f"README command (1) took {elapsed:.0f} s")  # a figure for the log, not an assertion
    # Every service of the stack was stopped again.
    leftover = subprocess.run(["pgrep", "-f", cli_env["VITSWEEP_HOME"]], capture_output=True, text=True).stdout
    assert leftover.strip() == ""
