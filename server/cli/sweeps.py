"""Client commands about sweeps: submit (and watch), status, compare, report, add-trials, cancel, pause, resume."""

from __future__ import annotations

import io
import sys
import time
import zipfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from server import compare as comparison
from server.cli.app import app, console, err, settings
from server.cli.client import ApiClient

FINISHED = ("completed", "pruned", "failed", "cancelled")


def read_spec(path: Path) -> tuple[str, str]:
    """A spec file's text and its content type (``-`` reads stdin)."""
    if str(path) == "-":
        text = sys.stdin.read()
    else:
        if not path.exists():
            raise typer.BadParameter(f"no such file: {path}", param_hint="SPEC")
        text = path.read_text()
    ctype = "application/json" if path.suffix == ".json" or text.lstrip().startswith("{") else "application/yaml"
    return text, ctype


def submit_text(client: ApiClient, text: str, ctype: str) -> dict[str, Any]:
    """POST a spec; returns the new sweep."""
    sweep = client.post("/api/v1/sweeps", content=text, headers={"content-type": ctype})
    return sweep


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Experiment spec, YAML or JSON ('-' for stdin)")],
    wait: Annotated[bool, typer.Option(help="Show progress until the sweep ends")] = False,
) -> None:
    """Submit an experiment spec; prints the new sweep's id."""
    client = ApiClient(settings())
    text, ctype = read_spec(spec)
    sweep = submit_text(client, text, ctype)
    console.print(f"sweep [bold]{sweep['id']}[/] ({sweep['name']}): {sweep['n_trials']} trials queued")
    if wait:
        final = watch(client, sweep["id"])
        print_compare(client, [sweep["id"]], "table", best=False, sort=None)
        if final["state"] != "completed":
            raise typer.Exit(1)


def watch(client: ApiClient, sweep_id: int, poll: float = 1.0) -> dict[str, Any]:
    """Live progress of a sweep until it ends; returns the final sweep."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=console,
    )
    with progress:
        task = progress.add_task(f"sweep {sweep_id}", total=None, info="")
        while True:
            sweep = client.get(f"/api/v1/sweeps/{sweep_id}")
            c = sweep["counts"]
            done = sum(c[s] for s in FINISHED)
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
    client = ApiClient(settings())
    if sweep_id is None:
        page = client.get("/api/v1/sweeps", params={"limit": 50})
        table = Table("id", "name", "state", "model", "dataset", "trials", "done", "running", "best", title="sweeps")
        for s in page["items"]:
            c = s["counts"]
            done = sum(c[k] for k in FINISHED)
            best = s["best_trial"]
            shown = f"{best['value']:.4f} (trial {best['number']})" if best and best["value"] is not None else "-"
            table.add_row(str(s["id"]), s["name"], f"[{_state_style(s['state'])}]{s['state']}[/]", s["model"], s["dataset"],
                          str(s["n_trials"]), str(done), str(c["running"]), shown)
        console.print(table)
        return
    sweep = client.get(f"/api/v1/sweeps/{sweep_id}")
    trials = client.get(f"/api/v1/sweeps/{sweep_id}/trials")
    console.print(f"sweep [bold]{sweep['id']}[/] {sweep['name']}: [{_state_style(sweep['state'])}]{sweep['state']}[/]  "
                  f"{sweep['metric']} ({sweep['direction']})  study {sweep['study_name']}")
    table = Table("trial", "state", "params", "epochs", sweep["metric"], "worker", "error")
    for t in trials:
        value = f"{t['value']:.4f}" if t["value"] is not None else "-"
        table.add_row(str(t["number"]), f"[{_state_style(t['state'])}]{t['state']}[/]",
                      comparison.format_params(t["params"] or {}) or "-", str(t["epochs_done"]),
                      value, t["worker_id"] or "-", (t["error"] or "")[:60])
    console.print(table)


def print_compare(
    client: ApiClient, ids: list[int], fmt: str, best: bool, sort: Optional[str], *, ascending: bool = False,
    **filters: Optional[list[str]],
) -> None:
    """Fetch the comparison rows and print them as a rich table, or as CSV, JSON or Markdown."""
    params: dict[str, Any] = {"sweeps": ids, "best": best, "format": "json"}  # lists go as repeated parameters
    if sort:
        params["sort"] = sort
        params["order"] = "asc" if ascending else "desc"
    params.update({k: v for k, v in filters.items() if v})
    rows = client.get("/api/v1/compare", params=params)
    if fmt != "table":
        sys.stdout.write(comparison.render(rows, fmt))  # type: ignore[arg-type]
        return
    columns = comparison.TABLE_COLUMNS
    table = Table(title="comparison", box=box.SIMPLE_HEAD, pad_edge=False)
    for key, header in columns:
        if key == "params_searched":  # the one column that wraps; the figures stay on one line
            table.add_column(header, overflow="fold", min_width=16, ratio=1)
        else:  # two-line headers ("best / val acc") keep the figures' columns narrow
            table.add_column(header.replace(" ", "\n", 1), no_wrap=True,
                             justify="left" if key in comparison.TEXT_COLUMNS else "right")
    for r in rows:
        table.add_row(*[comparison.cell(k, r.get(k)) for k, _ in columns])
    console.print(table)


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
    print_compare(ApiClient(settings()), sweep_ids, format, best, sort, ascending=asc, state=state, model=model,
                  dataset=dataset)


@app.command("add-trials")
def add_trials(
    sweep_id: int,
    n: Annotated[int, typer.Argument(min=1, max=10_000, help="How many trials to add")],
) -> None:
    """Queue N more trials of a search; a completed sweep runs again (grids are fixed)."""
    s = ApiClient(settings()).post(f"/api/v1/sweeps/{sweep_id}/trials", json={"n": n})
    console.print(f"sweep {s['id']}: {s['state']}, {s['n_trials']} trials")


@app.command()
def report(
    sweep_id: int,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.html, report.md and the figures")] = Path(
        "."
    ),
) -> None:
    """Write a sweep's report: report.html (self-contained, figures inline) and report.md beside its PNG figures."""
    client = ApiClient(settings(), timeout=300)
    html = client.call("GET", f"/api/v1/sweeps/{sweep_id}/report", params={"format": "html"})
    bundle = client.call("GET", f"/api/v1/sweeps/{sweep_id}/report", params={"format": "md"})
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


def _control(sweep_id: int, action: str) -> None:
    s = ApiClient(settings()).post(f"/api/v1/sweeps/{sweep_id}/{action}")
    console.print(f"sweep {s['id']}: {s['state']}")


@app.command()
def cancel(sweep_id: int) -> None:
    """Cancel a sweep (running trials stop at their next epoch boundary)."""
    _control(sweep_id, "cancel")


@app.command()
def pause(sweep_id: int) -> None:
    """Pause a sweep: no new trials start."""
    _control(sweep_id, "pause")


@app.command()
def resume(sweep_id: int) -> None:
    """Resume a paused sweep."""
    _control(sweep_id, "resume")
