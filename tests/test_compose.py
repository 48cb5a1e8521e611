"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked without one:
every service command is a real entry point with real options, every VITSWEEP_ variable is read by Settings,
and the wiring (health checks, dependencies, GPU reservation) is in place."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from server.cli import app
from server.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _argv(service: dict) -> list[str]:  # type: ignore[type-arg]
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _parse(program: str, args: list[str]) -> None:
    """Parse ``args`` with the program's real command tree: ``--help`` at the end makes it parse and exit without
    running, and an unknown subcommand or option is a usage error (exit code 2)."""
    if program == "vitsweep":
        from typer.testing import CliRunner

        result = CliRunner().invoke(app, [*args, "--help"])
    else:
        from click.testing import CliRunner as ClickRunner
        from mlflow.cli import cli as mlflow_cli

        result = ClickRunner().invoke(mlflow_cli, [*args, "--help"])
    assert result.exit_code == 0, f"{program} {' '.join(args)}: {result.output}"


def test_every_command_is_a_real_entry_point(compose) -> None:  # type: ignore[no-untyped-def]
    seen = set()
    for name, service in compose["services"].items():
        if "command" not in service:
            continue
        argv = _argv(service)
        program = argv[0]
        seen.add(program)
        if program in ("vitsweep", "mlflow"):
            _parse(program, argv[1:])
        elif program == "optuna-dashboard":
            bin_path = Path(sys.executable).parent / "optuna-dashboard"
            assert bin_path.exists() or shutil.which(program), "optuna-dashboard is not installed"
            from optuna_dashboard._cli import main  # noqa: F401  (the console script's module)
        else:
            pytest.fail(f"service {name}: unknown program {program!r}")
    assert seen == {"vitsweep", "mlflow", "optuna-dashboard"}


def test_every_vitsweep_variable_is_a_setting(compose) -> None:  # type: ignore[no-untyped-def]
    fields = {f"VITSWEEP_{n.upper()}" for n in Settings.model_fields}
    variables = set(compose["x-env"])
    for service in compose["services"].values():
        env = service.get("environment") or {}
        variables |= set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
    ours = {v for v in variables if v.startswith("VITSWEEP_")}
    assert ours, "no VITSWEEP_ variables wired"
    assert ours <= fields, f"not read by Settings: {sorted(ours - fields)}"


def test_wiring(compose) -> None:  # type: ignore[no-untyped-def]
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "api", "dashboard", "worker"}
    for name in ("postgres", "mlflow", "api", "dashboard"):
        assert "healthcheck" in services[name], name
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    env = compose["x-env"]
    db = env["VITSWEEP_DATABASE_URL"]
    # Optuna dashboard reads the same database as the API and workers; MLflow keeps its own.
    assert db in _argv(services["dashboard"])
    mlflow_argv = _argv(services["mlflow"])
    assert mlflow_argv[mlflow_argv.index("--backend-store-uri") + 1].endswith("/mlflow")
    assert env["VITSWEEP_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name in ("api", "mlflow", "dashboard"):
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    # The API sees the workers' data directory, so its submission check of missing data (check_data) holds.
    data = [v for v in services["worker"]["volumes"] if v.rsplit(":", 2)[1] == env["VITSWEEP_DATA_DIR"]]
    assert data and data[0] in services["api"].get("volumes", []), services["api"]
    Settings(**{k.removeprefix("VITSWEEP_").lower(): v for k, v in env.items() if v and "${" not in v})


def test_every_setting_is_in_the_readme_table() -> None:
    """Each ``VITSWEEP_*`` variable that Settings reads has its row in the README's configuration table (a row may
    name several: ``VITSWEEP_API_HOST`` / ``_PORT`` / ``_URL``)."""
    import re

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## Scaling out")]
    documented: set[str] = set()
    for row in (line for line in table.splitlines() if line.startswith("| `VITSWEEP_")):
        names = re.findall(r"`(_?[A-Z][A-Z_]*)`", row.split("|")[1])
        first = names[0]
        for name in names:
            if name.startswith("_"):  # shorthand: after the first name's group, or after VITSWEEP
                documented |= {first.split("_", 2)[0] + "_" + first.split("_", 2)[1] + name, "VITSWEEP" + name}
            else:
                documented.add(name)
    fields = {f"VITSWEEP_{name.upper()}" for name in Settings.model_fields}
    assert fields <= documented, f"not in the README's table: {sorted(fields - documented)}"
