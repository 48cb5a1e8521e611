"""The ``vitsweep`` command line: run the stack, submit and watch sweeps, compare trials.

Client commands (submit, status, compare, cancel, ...) talk to the REST API, like any other client.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import httpx
import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from server import compare as compare_mod
from server.core.config import Settings

app = typer.Typer(help="Sweeps of vision transformers and CNN baselines.", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
# Piped output (CI logs, files) gets a wide console rather than rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

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


def _settings() -> Settings:
    return Settings()


def _client(settings: Settings) -> httpx.Client:
    headers = {}
    if settings.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    return httpx.Client(base_url=settings.base_url, headers=headers, timeout=30)


def _call(method: str, path: str, settings: Settings, **kwargs: Any) -> httpx.Response:
    """One API call; connection failures and 4xx/5xx become a clear message and exit code 1."""
    try:
        with _client(settings) as client:
            response = client.request(method, path, **kwargs)
    except httpx.ConnectError:
        err.print(f"[red]cannot reach the vitsweep API at {settings.base_url}[/]; start it with `vitsweep up` "
                  "or set VITSWEEP_API_URL")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        err.print(f"[red]{response.status_code}[/] {_error_text(response)}")
        raise typer.Exit(1)
    return response


def _error_text(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text
    if isinstance(detail, list):
        return "\n".join(f"  {'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return str(detail)


# -- services -------------------------------------------------------------------------------------------


@app.command()
def server(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default VITSWEEP_API_HOST, 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default VITSWEEP_API_PORT, 8000)")] = None,
) -> None:
    """Run the REST API (applies database migrations first)."""
    import uvicorn

    from server.main import create_app

    settings = _settings()
    uvicorn.run(create_app(settings), host=host or settings.api_host, port=port or settings.api_port, log_level="info")


@app.command()
def worker(
    devices: Annotated[str, typer.Option(help="cpu | cuda:0,cuda:1 | all")] = "cpu",
    slots_per_device: Annotated[str, typer.Option(
        help="Trial processes per device, 1-64, or auto: grow while total throughput rises and memory allows")] = "1",
    max_trials: Annotated[Optional[int], typer.Option(min=1, help="Each slot stops after this many trials")] = None,
    burst: Annotated[bool, typer.Option(help="Exit once no trial is queued or running")] = False,
) -> None:
    """Run worker slots that claim and train queued trials."""
    from worker.slots import parse_slots
    from worker.supervisor import SupervisorOptions, parse_devices, run_supervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        parsed = parse_devices(devices)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--devices") from None
    try:
        slots = parse_slots(slots_per_device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slots-per-device") from None
    options = SupervisorOptions(devices=parsed, slots_per_device=slots, max_trials=max_trials, burst=burst)
    raise typer.Exit(run_supervisor(_settings(), options))


def _sigterm_as_interrupt() -> None:
    """`up` and `demo` own child processes: a SIGTERM must unwind through their cleanup like Ctrl-C does."""
    import signal

    def handle(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handle)


def _addresses(settings: Settings, ui: bool = True) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("API docs", f"{settings.base_url}/docs")
    if ui:
        table.add_row("MLflow UI", settings.mlflow_ui)
        table.add_row("Optuna dashboard", settings.dashboard)
    table.add_row("Home", str(settings.home))
    return table


@app.command()
def up(
    devices: Annotated[str, typer.Option(help="cpu | cuda:0,cuda:1 | all")] = "cpu",
    slots_per_device: Annotated[str, typer.Option(help="Trial processes per device, 1-64, or auto")] = "1",
    ui: Annotated[bool, typer.Option(help="Also start the MLflow UI and Optuna dashboard")] = True,
) -> None:
    """Start the embedded stack on 127.0.0.1: API, a local worker, MLflow UI, Optuna dashboard. Ctrl-C stops all."""
    from server.stack import Stack
    from worker.slots import parse_slots

    try:
        parse_slots(slots_per_device)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slots-per-device") from None
    settings = _settings()
    _sigterm_as_interrupt()
    stack = Stack(settings, devices=devices, slots_per_device=slots_per_device, ui=ui)
    try:
        with console.status("starting the stack..."):
            stack.start()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    console.print("[green]vitsweep is up[/]")
    console.print(_addresses(settings, ui))
    console.print("Ctrl-C stops everything.")
    try:
        while not stack.dead():
            time.sleep(1.0)
        err.print(f"[red]{', '.join(s.name for s in stack.dead())} stopped; see {settings.home / 'logs'}[/]")
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        stack.stop()


# -- client commands ------------------------------------------------------------------------------------


def _read_spec(path: Path) -> tuple[str, str]:
    if str(path) == "-":
        text = sys.stdin.read()
    else:
        if not path.exists():
            raise typer.BadParameter(f"no such file: {path}", param_hint="SPEC")
        text = path.read_text()
    ctype = "application/json" if path.suffix == ".json" or text.lstrip().startswith("{") else "application/yaml"
    return text, ctype


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Experiment spec, YAML or JSON ('-' for stdin)")],
    wait: Annotated[bool, typer.Option(help="Show progress until the sweep ends")] = False,
) -> None:
    """Submit an experiment spec; prints the new sweep's id."""
    settings = _settings()
    text, ctype = _read_spec(spec)
    sweep = _call("POST", "/api/v1/sweeps", settings, content=text, headers={"content-type": ctype}).json()
    console.print(f"sweep [bold]{sweep['id']}[/] ({sweep['name']}): {sweep['n_trials']} trials queued")
    if wait:
        final = watch(settings, sweep["id"])
        _print_compare(settings, [sweep["id"]], "table", best=False, sort=None)
        if final["state"] != "completed":
            raise typer.Exit(1)


def watch(settings: Settings, sweep_id: int, poll: float = 1.0) -> dict[str, Any]:
    """Live progress of a sweep until it ends; returns the final sweep."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=console,
    )
    with progress:
        task = progress.add_task(f"sweep {sweep_id}", total=None, info="")
        while True:
            sweep = _call("GET", f"/api/v1/sweeps/{sweep_id}", settings).json()
            c = sweep["counts"]
            done = sum(c[s] for s in ("completed", "pruned", "failed", "cancelled"))
            best = sweep.get("best_trial")
            info = f"running {c['running']}  pruned {c['pruned']}  failed {c['failed']}"
            if best:
                info += f"  best {sweep['metric']} {best['value']:.4f} (trial {best['number']})"
            progress.update(task, total=sweep["n_trials"], completed=done, info=info)
            if sweep["state"] in ("completed", "cancelled", "failed"):
                return sweep
            time.sleep(poll)


def _state_style(state: str) -> str:
    return {"completed": "green", "running": "cyan", "failed": "red", "pruned": "yellow", "cancelled": "magenta"}.get(state, "white")


@app.command()
def status(sweep_id: Annotated[Optional[int], typer.Argument(help="A sweep id; all sweeps if omitted")] = None) -> None:
    """Sweeps and their trial counts, or one sweep's trials."""
    settings = _settings()
    if sweep_id is None:
        page = _call("GET", "/api/v1/sweeps", settings, params={"limit": 50}).json()
        table = Table("id", "name", "state", "model", "dataset", "trials", "done", "running", "best", title="sweeps")
        for s in page["items"]:
            c = s["counts"]
            done = sum(c[k] for k in ("completed", "pruned", "failed", "cancelled"))
            table.add_row(str(s["id"]), s["name"], f"[{_state_style(s['state'])}]{s['state']}[/]", s["model"], s["dataset"],
                          str(s["n_trials"]), str(done), str(c["running"]), "-")
        console.print(table)
        return
    sweep = _call("GET", f"/api/v1/sweeps/{sweep_id}", settings).json()
    trials = _call("GET", f"/api/v1/sweeps/{sweep_id}/trials", settings).json()
    console.print(f"sweep [bold]{sweep['id']}[/] {sweep['name']}: [{_state_style(sweep['state'])}]{sweep['state']}[/]  "
                  f"{sweep['metric']} ({sweep['direction']})  study {sweep['study_name']}")
    table = Table("trial", "state", "params", "epochs", sweep["metric"], "worker", "error")
    for t in trials:
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={compare_mod._short(v)}" for k, v in (t["params"] or {}).items())
        value = f"{t['value']:.4f}" if t["value"] is not None else "-"
        table.add_row(str(t["number"]), f"[{_state_style(t['state'])}]{t['state']}[/]", params or "-", str(t["epochs_done"]),
                      value, t["worker_id"] or "-", (t["error"] or "")[:60])
    console.print(table)


def _print_compare(
    settings: Settings, ids: list[int], fmt: str, best: bool, sort: Optional[str], *, ascending: bool = False,
    **filters: Optional[list[str]],
) -> None:
    params: dict[str, Any] = {"sweeps": ",".join(map(str, ids)), "best": best, "format": "json"}
    if sort:
        params["sort"] = sort
        params["order"] = "asc" if ascending else "desc"
    params.update({k: ",".join(v) for k, v in filters.items() if v})
    rows = _call("GET", "/api/v1/compare", settings, params=params).json()
    if fmt == "table":
        columns = compare_mod.TABLE_COLUMNS
        table = Table(title="comparison", box=box.SIMPLE_HEAD, pad_edge=False)
        for key, header in columns:
            if key == "params_searched":  # the one column that wraps; the figures stay on one line
                table.add_column(header, overflow="fold", min_width=16, ratio=1)
            else:  # two-line headers ("best / val acc") keep the figures' columns narrow
                table.add_column(header.replace(" ", "\n", 1), no_wrap=True,
                                 justify="left" if key in compare_mod.TEXT_COLUMNS else "right")
        for r in rows:
            table.add_row(*[compare_mod.cell(k, r.get(k)) for k, _ in columns])
        console.print(table)
    else:
        sys.stdout.write(compare_mod.render(rows, fmt))  # type: ignore[arg-type]


@app.command()
def compare(
    sweep_ids: Annotated[list[int], typer.Argument(help="One or more sweep ids")],
    format: Annotated[str, typer.Option("--format", "-f", help="table | csv | json | md")] = "table",
    best: Annotated[bool, typer.Option(help="Only each sweep's best trial")] = False,
    sort: Annotated[Optional[str], typer.Option(help="Sort by this column, descending (e.g. best_val_acc)")] = None,
    asc: Annotated[bool, typer.Option("--asc", help="Sort ascending (e.g. --sort final_val_loss --asc)")] = False,
    state: Annotated[Optional[list[str]], typer.Option(help="Only trials in this state (repeatable)")] = None,
    model: Annotated[Optional[list[str]], typer.Option(help="Only trials of this model (repeatable)")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option(help="Only trials on this dataset (repeatable)")] = None,
) -> None:
    """Compare trials across sweeps: model, searched values, accuracies, parameters, resources."""
    if format not in ("table", "csv", "json", "md"):
        raise typer.BadParameter(f"unknown format {format!r}; use table, csv, json or md", param_hint="--format")
    _print_compare(_settings(), sweep_ids, format, best, sort, ascending=asc, state=state, model=model, dataset=dataset)


@app.command("add-trials")
def add_trials(
    sweep_id: int,
    n: Annotated[int, typer.Argument(min=1, max=10_000, help="How many trials to add")],
) -> None:
    """Queue N more trials of a search; a completed sweep runs again (grids are fixed)."""
    s = _call("POST", f"/api/v1/sweeps/{sweep_id}/trials", _settings(), json={"n": n}).json()
    console.print(f"sweep {s['id']}: {s['state']}, {s['n_trials']} trials")


@app.command()
def report(
    sweep_id: int,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.html, report.md and the figures")] = Path(
        "."
    ),
) -> None:
    """Write a sweep's report: report.html (self-contained, figures inline) and report.md beside its PNG figures."""
    import io
    import zipfile

    settings = _settings()
    html = _call("GET", f"/api/v1/sweeps/{sweep_id}/report", settings, params={"format": "html"}, timeout=300)
    bundle = _call("GET", f"/api/v1/sweeps/{sweep_id}/report", settings, params={"format": "md"}, timeout=300)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(html.text, encoding="utf-8")
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        names = archive.namelist()
        for name in names:  # flat names only, written by our own server; still, never outside --out
            if Path(name).name != name:
                err.print(f"[red]skipping unexpected entry {name!r} in the report bundle[/]")
                continue
            (out / name).write_bytes(archive.read(name))
    console.print(f"wrote {out / 'report.html'}, {out / 'report.md'} and {len(names) - 1} figures")


@app.command()
def cancel(sweep_id: int) -> None:
    """Cancel a sweep (running trials stop at their next epoch boundary)."""
    s = _call("POST", f"/api/v1/sweeps/{sweep_id}/cancel", _settings()).json()
    console.print(f"sweep {s['id']}: {s['state']}")


@app.command()
def pause(sweep_id: int) -> None:
    """Pause a sweep: no new trials start."""
    s = _call("POST", f"/api/v1/sweeps/{sweep_id}/pause", _settings()).json()
    console.print(f"sweep {s['id']}: {s['state']}")


@app.command()
def resume(sweep_id: int) -> None:
    """Resume a paused sweep."""
    s = _call("POST", f"/api/v1/sweeps/{sweep_id}/resume", _settings()).json()
    console.print(f"sweep {s['id']}: {s['state']}")


# -- catalog --------------------------------------------------------------------------------------------


@app.command()
def models(
    img_size: Annotated[int, typer.Option(min=4, max=1024)] = 32,
    in_chans: Annotated[int, typer.Option(min=1, max=4)] = 3,
    num_classes: Annotated[int, typer.Option(min=1)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Registered models, their defaults and parameter counts at an image size."""
    from vitmodels import describe_models

    infos = describe_models(img_size=img_size, in_chans=in_chans, num_classes=num_classes)
    if as_json:
        sys.stdout.write(json.dumps(infos, indent=2, default=str) + "\n")
        return
    table = Table("model", "family", "params", "defaults", title=f"models at {img_size}x{img_size}x{in_chans}")
    for m in infos:
        params = f"{m['params']:,}" if m.get("params") is not None else f"[red]{m.get('error', '-')}[/]"
        defaults = ", ".join(f"{k}={v}" for k, v in m.get("defaults", {}).items())
        table.add_row(m["name"], m.get("family") or "-", params, defaults)
    console.print(table)
    console.print("Any timm model as timm:<name>.")


@app.command()
def datasets() -> None:
    """Dataset names and augmentation presets."""
    from worker.augment import list_augments
    from worker.data import list_datasets

    settings = _settings()
    console.print("datasets: " + ", ".join(list_datasets()))
    console.print("augment presets: " + ", ".join(list_augments()))
    console.print(f"data directory: {settings.datasets_dir} (VITSWEEP_DATA_DIR)")


# -- database -------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to the configured database."""
    import migrations

    settings = _settings()
    settings.ensure_home()
    migrations.upgrade(settings.db_url, revision)
    console.print(f"database at revision {migrations.current(settings.db_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision."""
    import migrations

    console.print(str(migrations.current(_settings().db_url)))


# -- demo -----------------------------------------------------------------------------------------------


@app.command()
def demo(
    spec: Annotated[Optional[Path], typer.Option(help="Run this spec instead of the embedded default")] = None,
    slots: Annotated[int, typer.Option(min=1, max=64, help="Worker slots on the CPU")] = 2,
    devices: Annotated[str, typer.Option(help="cpu | cuda:0,... | all")] = "cpu",
    keep: Annotated[Optional[bool], typer.Option(help="Keep the stack up afterwards (default: when interactive)")] = None,
    ui: Annotated[bool, typer.Option(help="Start the MLflow UI and Optuna dashboard")] = True,
    print_spec: Annotated[bool, typer.Option(help="Print the embedded default spec and exit")] = False,
) -> None:
    """Start the embedded stack, run a sweep on the bundled digits data, show progress and the comparison."""
    from server.stack import Stack

    if print_spec:
        sys.stdout.write(DEMO_SPEC)
        return
    settings = _settings()
    text, ctype = _read_spec(spec) if spec else (DEMO_SPEC, "application/yaml")
    _sigterm_as_interrupt()
    stack = Stack(settings, devices=devices, slots_per_device=slots, ui=ui)
    console.print("starting the stack (API, worker, MLflow UI, Optuna dashboard)...")
    try:
        stack.start()
        sweep = _call("POST", "/api/v1/sweeps", settings, content=text, headers={"content-type": ctype}).json()
        console.print(f"submitted sweep [bold]{sweep['id']}[/] ({sweep['name']}): {sweep['n_trials']} trials")
        final = watch(settings, sweep["id"])
        _print_compare(settings, [sweep["id"]], "table", best=False, sort=None)
        best = final.get("best_trial")
        if best:
            console.print(f"best trial {best['number']}: {final['metric']} = [bold]{best['value']:.4f}[/] "
                          f"with {best['params']}")
        console.print(_addresses(settings, ui))
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
