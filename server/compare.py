"""Comparison tables over the SQL store: one row per trial (or per sweep's best), across sweeps."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.core.exceptions import NotFoundError
from server.core.models import Sweep, SweepState, Trial, TrialState
from server.core.objectives import Direction, rank_key, stored_figure

Format = Literal["table", "csv", "json", "md"]
# The columns a comparison sorts by (every one but the searched values and the objectives, which are mappings).
SortColumn = Literal[
    "sweep_id", "sweep", "trial", "slug", "model", "dataset", "state", "metric", "value", "best_val_acc",
    "final_train_acc", "final_val_loss", "svc_acc", "param_count", "peak_memory_mb", "peak_reserved_mb",
    "seconds_per_epoch", "median_images_per_second", "epochs", "mlflow_run_id", "error",
]

# (column, header) in display order; metric keys come from the trial's final figures.
COLUMNS: list[tuple[str, str]] = [
    ("sweep_id", "sweep"),
    ("sweep", "name"),
    ("trial", "trial"),
    ("model", "model"),
    ("dataset", "dataset"),
    ("params_searched", "searched"),
    ("state", "state"),
    ("value", "objective"),
    ("best_val_acc", "best val acc"),
    ("final_train_acc", "final train acc"),
    ("final_val_loss", "val loss"),
    ("svc_acc", "svc acc"),
    ("param_count", "params"),
    ("peak_memory_mb", "peak MB"),
    ("peak_reserved_mb", "reserved MB"),
    ("seconds_per_epoch", "s/epoch"),
    ("median_images_per_second", "img/s"),
    ("epochs", "epochs"),
]


# The terminal table keeps to what fits beside each other (every column the comparison is about, not the
# sweep's name or the epoch count); the files (CSV, JSON, Markdown) carry everything.
TABLE_COLUMNS: list[tuple[str, str]] = [c for c in COLUMNS if c[0] not in ("sweep", "epochs")]

# Columns of names rather than figures (left-aligned in tables).
TEXT_COLUMNS = frozenset({"sweep", "model", "dataset", "params_searched", "state"})

# Filters a comparison takes (API query parameters, CLI options): a row is kept when its value is one given.
FILTERS = ("state", "model", "dataset")


def rows(sessions: sessionmaker[Session], sweep_ids: Sequence[int], *, best_only: bool = False) -> list[dict[str, Any]]:
    """Comparison rows for ``sweep_ids`` (in that order), trials by number."""
    with sessions() as session:
        sweeps = {s.id: s for s in session.scalars(select(Sweep).where(Sweep.id.in_(sweep_ids), Sweep.state != SweepState.pending))}
        missing = [i for i in sweep_ids if i not in sweeps]
        if missing:
            raise NotFoundError("sweep", ", ".join(map(str, missing)))
        trials = session.scalars(select(Trial).where(Trial.sweep_id.in_(sweep_ids)).order_by(Trial.sweep_id, Trial.number))
        by_sweep: dict[int, list[Trial]] = {i: [] for i in sweep_ids}
        for t in trials:
            by_sweep[t.sweep_id].append(t)
        out: list[dict[str, Any]] = []
        for sweep_id in sweep_ids:
            sweep = sweeps[sweep_id]
            chosen = by_sweep[sweep_id]
            if best_only:
                done = [t for t in chosen if t.state == TrialState.completed and t.value is not None]
                direction: Direction = "maximize" if sweep.direction == "maximize" else "minimize"
                chosen = sorted(done, key=lambda t: (rank_key(t.value, direction), t.number))[:1]
            out.extend(_row(sweep, t) for t in chosen)
        return out


def _mib(figure: float | None) -> float | None:
    return round(figure / 2**20, 1) if figure is not None else None


def _row(sweep: Sweep, trial: Trial) -> dict[str, Any]:
    m = trial.metrics or {}
    searched = trial.params or {}
    model = searched.get("model.name", sweep.model)
    return {
        "sweep_id": sweep.id,
        "sweep": sweep.name,
        "trial": trial.number,
        "slug": trial.slug,
        "model": model,
        "dataset": searched.get("dataset.name", sweep.dataset),
        "params_searched": searched,
        "state": trial.state.value,
        "metric": sweep.metric,
        "value": trial.value,
        "best_val_acc": m.get("best_val_acc"),
        "final_train_acc": m.get("final_train_acc"),
        "final_val_loss": m.get("final_val_loss"),
        "svc_acc": m.get("svc_acc"),
        "param_count": _param_count(m),
        "peak_memory_mb": _mib(m.get("peak_memory_bytes")),
        "peak_reserved_mb": _mib(m.get("peak_memory_reserved_bytes")),
        "seconds_per_epoch": m.get("seconds_per_epoch"),
        "median_images_per_second": stored_figure(m, "median_images_per_second"),
        "epochs": trial.epochs_done,
        "mlflow_run_id": trial.mlflow_run_id,
        "objectives": m.get("objectives"),
        "error": trial.error,
    }


def _param_count(summary: dict[str, Any]) -> int | None:
    """The model's parameter count from a trial's summary (``params`` in trials stored before it was renamed)."""
    count = summary.get("param_count", summary.get("params"))
    return int(count) if count is not None else None


def filter_rows(data: list[dict[str, Any]], **wanted: Sequence[str] | None) -> list[dict[str, Any]]:
    """Rows whose ``state``, ``model`` and ``dataset`` are among the values given for each (None: any)."""
    unknown = set(wanted) - set(FILTERS)
    if unknown:
        raise ValueError(f"cannot filter by {', '.join(sorted(unknown))}; filters: {', '.join(FILTERS)}")
    if wanted.get("state"):
        valid = {s.value for s in TrialState}
        bad = [s for s in wanted["state"] or [] if s not in valid]
        if bad:
            raise ValueError(f"unknown trial state {bad[0]!r}; valid: {', '.join(sorted(valid))}")
    return [r for r in data if all(not values or r.get(key) in values for key, values in wanted.items())]


def sort_rows(data: list[dict[str, Any]], key: str | None, descending: bool = True) -> list[dict[str, Any]]:
    if not key:
        return data
    if data and key not in data[0]:
        raise ValueError(f"cannot sort by {key!r}; columns: {', '.join(data[0])}")
    present = [r for r in data if r.get(key) is not None]
    absent = [r for r in data if r.get(key) is None]
    try:
        return sorted(present, key=lambda r: r[key], reverse=descending) + absent
    except TypeError:  # searched values (a mapping), objectives
        raise ValueError(f"column {key!r} holds values that do not sort; sort by a number or a name") from None


def cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "params_searched":
        return format_params(value) or "-"
    if isinstance(value, float):
        if key in ("seconds_per_epoch", "peak_memory_mb", "peak_reserved_mb"):
            return f"{value:.2f}"
        if key == "median_images_per_second":
            return f"{value:,.0f}"
        return f"{value:.4f}"
    if isinstance(value, int) and key == "param_count":
        return f"{value:,}"
    return str(value)


def short_value(v: Any) -> str:
    """A searched value as tables show it: floats to 3 significant digits, strings bare, the rest as JSON."""
    return f"{v:.3g}" if isinstance(v, float) else json.dumps(v) if not isinstance(v, str) else v


def param_label(path: str) -> str:
    """A searched path as every table, figure and line names it: its last part (``train.lr`` -> ``lr``,
    ``model.arch.num_layers`` -> ``num_layers``), with the model for one family's keyword
    (``model.arch_by_model.vit.num_layers`` -> ``vit.num_layers``: families may share keywords)."""
    keys = path.split(".")
    if keys[:2] == ["model", "arch_by_model"] and len(keys) > 3:
        return ".".join(keys[2:])
    return keys[-1]


def format_params(params: dict[str, Any]) -> str:
    """Searched values as ``num_layers=4, lr=0.001`` (each path by :func:`param_label`)."""
    return ", ".join(f"{param_label(k)}={short_value(v)}" for k, v in params.items())


def render(data: list[dict[str, Any]], fmt: Format, columns: Sequence[tuple[str, str]] = COLUMNS) -> str:
    """Render rows as JSON, CSV or Markdown ("table" is the CLI's rich table; it renders as Markdown here).

    ``columns`` picks the Markdown table's columns (a one-sweep report leaves out the sweep's id and name).
    """
    if fmt == "json":
        return json.dumps(data, indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        keys = [k for k, _ in COLUMNS] + ["slug", "metric", "mlflow_run_id", "error"]
        writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in data:
            writer.writerow({k: json.dumps(r[k]) if k == "params_searched" else r.get(k) for k in keys})
        return buf.getvalue()
    headers = [h for _, h in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in data:
        lines.append("| " + " | ".join(cell(k, r.get(k)).replace("|", "\\|") for k, _ in columns) + " |")
    return "\n".join(lines) + "\n"
