"""Commands that run vitsweep's processes: the API (``server``), worker slots (``worker``), the embedded stack
(``up``) and the main job on the embedded default (``demo``)."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from server.cli.app import app, console, err, settings
from server.cli.client import ApiClient
from server.cli.sweeps import print_compare, read_spec, submit_text, watch
from server.core.config import Settings

DEMO_SPEC = """\
# The embedded default: a small ViT on scikit-learn's bundled digits (real data, no download), searched by TPE.
name: demo-vit-digits
description: Learning rate and depth of a small ViT on 8x8 digits upscaled to 16x16.
dataset: {name: digits, img_size: 16, augment: none}
model:
  name: vit
  arch: {patch_size: 4, num_layers: 3, num_heads: 4, hidden_dim: 64, mlp_dim: 128, dropout: 0.0}
train: {epochs: 15, batch_size: 64, optimizer: adamw, lr: 2.0e-3, weight_decay: 0.05, scheduler: cosine, warmup_epochs: 1, seed: 0}
search:
  sampler: tpe
  sampler_options: {seed: 0, n_startup_trials: 3}
  n_trials: 6
  metric: val_acc
  direction: maximize
  pruner: median
  pruner_options: {n_startup_trials: 3, n_warmup_steps: 5}
  space:
    train.lr: {type: float, low: 5.0e-4, high: 5.0e-3, log: true}
    model.arch.num_layers: {type: int, low: 2, high: 4}
"""


@app.command()
def server(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default VITSWEEP_API_HOST, 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default VITSWEEP_API_PORT, 8000)")] = None,
) -> None:
    """Run the REST API (applies database migrations first)."""
    import uvicorn

    from server.main import create_app

    s = settings()
    uvicorn.run(create_app(s), host=host or s.api_host, port=port or s.api_port, log_level="info")


@app.command()
def worker(
    devices: Annotated[str, typer.Option(help="cpu | cuda:0,cuda:1 | all")] = "cpu",
    slots_per_device: Annotated[str, typer.Option(
        help="Trial processes per device, 1-64, or auto: grow while total throughput rises and memory allows")] = "1",
    max_trials: Annotated[Optional[int], typer.Option(min=1, help="Each slot stops after this many trials")] = None,
    burst: Annotated[bool, typer.Option(help="Exit once no trial is queued or running")] = False,
) -> None:
    """Run worker slots that claim and train queued trials."""
    from worker import supervisor
    from worker.slots import parse_slots

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        parsed = supervisor.parse_devices(devices)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--devices") from None
    try:
        slots = parse_slots(slots_per_device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slots-per-device") from None
    options = supervisor.SupervisorOptions(devices=parsed, slots_per_device=slots, max_trials=max_trials, burst=burst)
    raise typer.Exit(supervisor.run_supervisor(settings(), options))


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option(help="Port (default VITSWEEP_DASHBOARD_PORT, 8080)")] = None,
) -> None:
    """Run Optuna dashboard on the store; with VITSWEEP_API_TOKEN set, only requests with the token get in."""
    from server.uiproxy import serve_dashboard

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = settings()
    token = s.api_token.get_secret_value() if s.api_token else None
    try:
        serve_dashboard(s.db_url, host, port or s.dashboard_port, token or None)
    except KeyboardInterrupt:
        pass


@app.command("ui-proxy", hidden=True)
def ui_proxy(
    socket: Annotated[Path, typer.Option(help="Unix socket of the UI behind the proxy")],
    port: Annotated[int, typer.Option(help="Port to listen on")],
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    name: Annotated[str, typer.Option(help="The UI's name, for messages")] = "the UI",
) -> None:
    """A reverse proxy that lets only requests with VITSWEEP_API_TOKEN through to the UI on ``--socket``
    (the token is read from the environment, never from the command line, which every user can see)."""
    import uvicorn

    from server.uiproxy import proxy_app

    s = settings()
    if not (s.api_token and s.api_token.get_secret_value()):
        raise typer.BadParameter("VITSWEEP_API_TOKEN is not set: there is no token to check", param_hint="ui-proxy")
    uvicorn.run(proxy_app(socket, s.api_token.get_secret_value(), name=name), host=host, port=port,
                log_level="info")


def _with_ports(s: Settings, api_port: int | None, mlflow_port: int | None, dashboard_port: int | None) -> Settings:
    """The settings with the ports given on the command line (each beats its ``VITSWEEP_*_PORT``)."""
    changes: dict[str, Any] = {key: value for key, value in (("api_port", api_port), ("mlflow_ui_port", mlflow_port),
                                              ("dashboard_port", dashboard_port)) if value is not None}
    return Settings(**changes) if changes else s


ApiPort = Annotated[Optional[int], typer.Option(min=1, max=65535, help="The API's port (default VITSWEEP_API_PORT, 8000)")]
MlflowPort = Annotated[Optional[int], typer.Option(
    min=1, max=65535, help="The MLflow UI's port (default VITSWEEP_MLFLOW_UI_PORT, 5000)")]
DashboardPort = Annotated[Optional[int], typer.Option(
    min=1, max=65535, help="Optuna dashboard's port (default VITSWEEP_DASHBOARD_PORT, 8080)")]


def _sigterm_as_interrupt() -> None:
    """`up` and `demo` own child processes: a SIGTERM must unwind through their cleanup like Ctrl-C does."""

    def handle(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handle)


def mlflow_link(s: Settings, sweep: dict[str, Any] | None = None) -> str:
    """Where the MLflow UI lists the runs: the experiment's runs table (MLflow 3 opens an experiment's GenAI
    overview otherwise), after a sweep only that sweep's runs. The bare UI address if MLflow cannot be read."""
    from server.core.tracking import Tracker, runs_url

    if sweep is not None and sweep.get("mlflow_experiment_id"):
        return runs_url(s.mlflow_ui, str(sweep["mlflow_experiment_id"]), int(sweep["id"]))
    try:
        experiment = Tracker(s.tracking_uri, s.mlflow_experiment, s.artifacts_root).experiment_id
    except Exception as exc:  # a tracking server away: the address still helps
        err.print(f"[yellow]could not read MLflow's experiment {s.mlflow_experiment!r}: {exc}[/]")
        return s.mlflow_ui
    return runs_url(s.mlflow_ui, experiment)


def _print_addresses(s: Settings, ui: bool = True, sweep: dict[str, Any] | None = None) -> None:
    """One line per address, never wrapped by rich (a long MLflow link must stay one link to copy or click)."""
    rows = [("API docs", f"{s.base_url}/docs")]
    if ui:
        rows += [("MLflow UI", mlflow_link(s, sweep)), ("Optuna dashboard", s.dashboard)]
        if s.api_token and s.api_token.get_secret_value():
            rows.append(("UI sign-in", "any user name, the API token (VITSWEEP_API_TOKEN) as the password"))
    rows.append(("Home", str(s.home)))
    for name, address in rows:
        console.print(f"{name:<17} {address}", soft_wrap=True, highlight=False)


@app.command()
def up(
    devices: Annotated[str, typer.Option(help="cpu | cuda:0,cuda:1 | all")] = "cpu",
    slots_per_device: Annotated[str, typer.Option(help="Trial processes per device, 1-64, or auto")] = "1",
    ui: Annotated[bool, typer.Option(help="Also start the MLflow UI and Optuna dashboard")] = True,
    api_port: ApiPort = None,
    mlflow_port: MlflowPort = None,
    dashboard_port: DashboardPort = None,
) -> None:
    """Start the embedded stack on 127.0.0.1: API, a local worker, MLflow UI, Optuna dashboard. Ctrl-C stops all."""
    from server.stack import Stack
    from worker.slots import parse_slots

    try:
        parse_slots(slots_per_device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slots-per-device") from None
    s = _with_ports(settings(), api_port, mlflow_port, dashboard_port)
    _sigterm_as_interrupt()
    stack = Stack(s, devices=devices, slots_per_device=slots_per_device, ui=ui)
    try:
        with console.status("starting the stack..."):
            stack.start()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except RuntimeError as exc:
        err.print(f"[red]vitsweep up: {exc}[/]")
        raise typer.Exit(1) from None
    console.print("[green]vitsweep is up[/]")
    _print_addresses(s, ui)
    console.print("Ctrl-C stops everything.")
    try:
        while not stack.dead():
            time.sleep(1.0)
        err.print(f"[red]{', '.join(svc.name for svc in stack.dead())} stopped; see {s.home / 'logs'}[/]")
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        stack.stop()


@app.command()
def demo(
    spec: Annotated[Optional[Path], typer.Option(help="Run this spec instead of the embedded default")] = None,
    slots: Annotated[int, typer.Option(min=1, max=64, help="Worker slots on the CPU")] = 2,
    devices: Annotated[str, typer.Option(help="cpu | cuda:0,... | all")] = "cpu",
    keep: Annotated[Optional[bool], typer.Option(help="Keep the stack up afterwards (default: when interactive)")] = None,
    ui: Annotated[bool, typer.Option(help="Start the MLflow UI and Optuna dashboard")] = True,
    print_spec: Annotated[bool, typer.Option(help="Print the embedded default spec and exit")] = False,
    api_port: ApiPort = None,
    mlflow_port: MlflowPort = None,
    dashboard_port: DashboardPort = None,
) -> None:
    """Start the embedded stack, run a sweep on the bundled digits data, show progress and the comparison."""
    from server.stack import Stack

    if print_spec:
        sys.stdout.write(DEMO_SPEC)
        return
    s = _with_ports(settings(), api_port, mlflow_port, dashboard_port)
    text, ctype = read_spec(spec) if spec else (DEMO_SPEC, "application/yaml")
    _sigterm_as_interrupt()
    stack = Stack(s, devices=devices, slots_per_device=slots, ui=ui)
    console.print("starting the stack (API, worker, MLflow UI, Optuna dashboard)...")
    client = ApiClient(s)
    try:
        try:
            stack.start()
        except RuntimeError as exc:  # a port taken, a service that would not come up: say which
            err.print(f"[red]vitsweep demo: {exc}[/]")
            raise typer.Exit(1) from None
        sweep = submit_text(client, text, ctype)
        console.print(f"submitted sweep [bold]{sweep['id']}[/] ({sweep['name']}): {sweep['n_trials']} trials")
        final = watch(client, sweep["id"])
        print_compare(client, [sweep["id"]], "table", best=False, sort=None)
        best = final.get("best_trial")
        if best:
            console.print(f"best trial {best['number']}: {final['metric']} = [bold]{best['value']:.4f}[/] "
                          f"with {best['params']}")
        _print_addresses(s, ui, final)
        if keep or (keep is None and sys.stdin.isatty() and sys.stdout.isatty()):
            console.print("The stack stays up; Ctrl-C stops it.")
            while not stack.dead():
                time.sleep(1.0)
        if final["state"] != "completed":
            raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        stack.stop()
