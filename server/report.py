"""A sweep's report: the comparison table, validation curves, the objective against each searched parameter,
Optuna's parameter importances, and links to every trial's MLflow run and to the study in Optuna dashboard.

Built from the three sources of truth: the SQL store (trials, values, figures), MLflow (per-epoch curves, read
back with ``get_metric_history``: the store keeps no second copy) and Optuna (importances). Figures are drawn
with matplotlib's object API (Agg, no pyplot state), so reports can be built from API threads. The HTML is
self-contained (figures inline as base64 PNG, no scripts, no external assets): it can be mailed or committed.
The Markdown version refers to the figures by file name; ``bundle`` zips it with them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import optuna
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure

from server import compare, store
from server.core.config import Settings
from server.models import Trial, TrialState
from server.spec import CategoricalParam, ExperimentSpec, FloatParam, IntParam

log = logging.getLogger(__name__)

DPI = 100
CURVE_METRICS = ("val_acc", "val_loss")
# The report is about one sweep: its id and name head the page, not every row.
REPORT_COLUMNS = [c for c in compare.COLUMNS if c[0] not in ("sweep_id", "sweep")]
MAX_LEGEND = 20  # more trials than this: no legend, the best one is still named
STATE_COLORS = {"completed": "#1f77b4", "pruned": "#ff7f0e", "failed": "#d62728", "cancelled": "#7f7f7f", "running": "#2ca02c"}


@dataclass
class Figure:
    """One PNG of the report; ``name`` is its file name without ``.png``."""

    name: str
    title: str
    caption: str
    png: bytes

    @property
    def file(self) -> str:
        return f"{self.name}.png"

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Report:
    """Everything a report shows, ready to render as HTML or Markdown."""

    sweep: dict[str, Any]
    rows: list[dict[str, Any]]
    figures: list[Figure]
    importances: dict[str, float] | None
    run_links: dict[int, str]
    sweep_run_link: str | None
    dashboard_link: str | None
    best_trial: int | None
    pareto_front: list[int] | None
    notes: list[str] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def build(backends: store.Backends, settings: Settings, sweep_id: int) -> Report:
    """Gather and draw a sweep's report.

    Raises:
        NotFoundError: no such sweep.
    """
    view = store.get_sweep(backends.sessions, sweep_id)
    sweep = view.sweep
    spec = ExperimentSpec.model_validate(sweep.spec)
    trials = store.list_trials(backends.sessions, sweep_id)
    rows = compare.rows(backends.sessions, [sweep_id])
    notes: list[str] = []

    experiment = sweep.mlflow_experiment_id
    mlflow_ui = settings.mlflow_ui.rstrip("/")
    run_links = {
        t.number: f"{mlflow_ui}/#/experiments/{experiment}/runs/{t.mlflow_run_id}" for t in trials if t.mlflow_run_id
    }
    sweep_run_link = f"{mlflow_ui}/#/experiments/{experiment}/runs/{sweep.mlflow_run_id}" if sweep.mlflow_run_id else None

    study: optuna.Study | None = None
    dashboard_link = None
    if sweep.study_name:
        try:
            study = optuna.load_study(study_name=sweep.study_name, storage=backends.storage)
            study_id = backends.storage.get_study_id_from_name(sweep.study_name)
            dashboard_link = f"{settings.dashboard.rstrip('/')}/dashboard/studies/{study_id}"
        except Exception as exc:  # the report still shows what the store and MLflow hold
            notes.append(f"Optuna study {sweep.study_name!r} could not be loaded: {exc}")

    histories = _histories(backends, trials, spec.metric, notes)
    best = view.best.number if view.best is not None else None
    figures: list[Figure] = []
    if any(histories.values()):
        figures.append(_curves(trials, histories, spec.metric, best))
    else:
        notes.append("No trial has finished an epoch yet: no validation curves.")
    figures.extend(_against_params(spec, trials, best))
    if spec.multi_objective:
        pareto = _pareto_figure(spec, trials, [t.number for t in view.pareto or []])
        if pareto is not None:
            figures.append(pareto)
    importances = _importances(study, spec, notes) if study is not None else None
    if importances:
        figures.append(_importance_figure(importances, spec.metric))

    info = {
        "id": sweep.id, "name": sweep.name, "state": sweep.state.value, "model": sweep.model, "dataset": sweep.dataset,
        "metric": sweep.metric, "direction": sweep.direction, "objectives": spec.objectives,
        "directions": spec.directions, "n_trials": sweep.n_trials, "counts": view.counts,
        "study_name": sweep.study_name, "description": spec.description,
        "best_value": view.best.value if view.best is not None else None,
        "best_params": view.best.params if view.best is not None else None,
    }
    return Report(
        sweep=info, rows=rows, figures=figures, importances=importances, run_links=run_links,
        sweep_run_link=sweep_run_link, dashboard_link=dashboard_link, best_trial=best,
        pareto_front=[t.number for t in view.pareto] if view.pareto is not None else None, notes=notes,
    )


# -- data ----------------------------------------------------------------------------------------------------


def _histories(
    backends: store.Backends, trials: Sequence[Trial], metric: str, notes: list[str]
) -> dict[int, dict[str, list[tuple[int, float]]]]:
    """Per trial, per metric: (epoch, value) pairs, read back from the trial's MLflow run."""
    keys = list(dict.fromkeys([*CURVE_METRICS, metric]))
    out: dict[int, dict[str, list[tuple[int, float]]]] = {}
    client = backends.tracker.client
    for t in trials:
        if not t.mlflow_run_id:
            continue
        try:
            out[t.number] = {
                k: sorted((m.step, m.value) for m in client.get_metric_history(t.mlflow_run_id, k)) for k in keys
            }
        except Exception as exc:
            notes.append(f"MLflow: could not read the curves of trial {t.number}: {exc}")
    return out


def _importances(study: optuna.Study, spec: ExperimentSpec, notes: list[str]) -> dict[str, float] | None:
    """Optuna's (fANOVA) parameter importances for the first objective; None with a note where there are none."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        notes.append(f"Parameter importances need at least 2 completed trials; this sweep has {len(done)}.")
        return None
    target = (lambda t: t.values[0]) if spec.multi_objective else None
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=target
        )
    except (ValueError, RuntimeError) as exc:  # e.g. no parameter varies across the completed trials
        notes.append(f"Parameter importances could not be computed: {exc}")
        return None
    if not importances:
        notes.append("Parameter importances: no parameter was searched in every completed trial.")
        return None
    return dict(importances)


# -- figures -------------------------------------------------------------------------------------------------


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _label(path: str) -> str:
    return path.split(".", 1)[1] if path.startswith(("train.", "dataset.")) else path.removeprefix("model.")


def _curves(
    trials: Sequence[Trial], histories: dict[int, dict[str, list[tuple[int, float]]]], metric: str, best: int | None
) -> Figure:
    keys = list(dict.fromkeys([*CURVE_METRICS, metric]))
    fig = MplFigure(figsize=(5.2 * len(keys) + 1.6, 4.2), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    legend = len(histories) <= MAX_LEGEND
    for ax, key in zip(axes, keys, strict=True):
        for t in trials:
            points = histories.get(t.number, {}).get(key) or []
            if not points:
                continue
            epochs, values = zip(*points, strict=True)
            is_best = t.number == best
            ax.plot(
                epochs, values, marker="o", markersize=3,
                linestyle="--" if t.state == TrialState.pruned else "-",
                linewidth=2.6 if is_best else 1.2, alpha=1.0 if is_best else 0.75, zorder=3 if is_best else 2,
                label=f"trial {t.number}" + (" (best)" if is_best else "") + (" pruned" if t.state == TrialState.pruned else "")
                if legend or is_best else None,
            )
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="outside right upper")
    fig.suptitle("Validation curves of every trial")
    return Figure("curves", "Validation curves", "Every trial's validation accuracy and loss per epoch (pruned trials "
                  "dashed, the best trial bold), read back from its MLflow run.", _png(fig))


def _space(spec: ExperimentSpec) -> dict[str, Any]:
    if spec.search is not None:
        return dict(spec.search.space)
    return {p: CategoricalParam(type="categorical", choices=v) for p, v in (spec.matrix or {}).items()}


def _against_params(spec: ExperimentSpec, trials: Sequence[Trial], best: int | None) -> list[Figure]:
    """The objective against each searched parameter: log axis for log-scale ranges, categories in order."""
    figures = []
    scored = [t for t in trials if t.value is not None and t.params and t.state in (TrialState.completed, TrialState.pruned)]
    for i, (path, dist) in enumerate(_space(spec).items()):
        points = [(t, t.params[path]) for t in scored if t.params and path in t.params]
        if not points:
            continue
        fig = MplFigure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        if isinstance(dist, CategoricalParam):
            _categorical_axis(ax, dist.choices, points)
        else:
            for state, marker in ((TrialState.completed, "o"), (TrialState.pruned, "x")):
                chosen = [(t, v) for t, v in points if t.state == state]
                if chosen:
                    ax.scatter([v for _, v in chosen], [_value(t) for t, _ in chosen], marker=marker, s=40,
                               color=STATE_COLORS[state.value], label=state.value, zorder=3)
            if isinstance(dist, (FloatParam, IntParam)) and dist.log:
                ax.set_xscale("log")
        for t, v in points:
            if t.number == best and not isinstance(dist, CategoricalParam):
                ax.scatter([v], [_value(t)], s=160, facecolors="none", edgecolors="black", linewidths=1.5, zorder=4,
                           label=f"best (trial {t.number})")
        ax.set_xlabel(_label(path) + (" (log scale)" if getattr(dist, "log", False) else ""))
        ax.set_ylabel(f"{spec.metric} (best epoch)")
        ax.set_title(f"{spec.metric} against {_label(path)} on {spec.dataset.name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        name = f"param_{i + 1:02d}_" + re.sub(r"[^A-Za-z0-9_]+", "_", path)[:60]
        figures.append(Figure(name, f"{spec.metric} against {path}",
                              f"Each trial's {spec.metric} at its best epoch against its {path}"
                              + (" (pruned trials: their best before pruning)." if any(
                                  t.state == TrialState.pruned for t, _ in points) else "."), _png(fig)))
    return figures


def _value(t: Trial) -> float:
    assert t.value is not None, t  # only scored trials are plotted
    return t.value


def _categorical_axis(ax: Axes, choices: Sequence[Any], points: list[tuple[Trial, Any]]) -> None:
    """Categories at evenly spaced positions (numbers in increasing order), trials jittered a little."""
    labels = [c if isinstance(c, str) else json.dumps(c) for c in choices]
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
        order = sorted(range(len(choices)), key=lambda i: choices[i])
    else:
        order = list(range(len(choices)))
    position = {labels[j]: k for k, j in enumerate(order)}
    for state, marker in ((TrialState.completed, "o"), (TrialState.pruned, "x")):
        chosen = [(t, v) for t, v in points if t.state == state]
        if not chosen:
            continue
        xs = []
        for n, (_, v) in enumerate(chosen):
            key = v if isinstance(v, str) else json.dumps(v)
            xs.append(position.get(key, -1) + 0.06 * ((n % 5) - 2))
        ax.scatter(xs, [_value(t) for t, _ in chosen], marker=marker, s=40, color=STATE_COLORS[state.value],
                   label=state.value, zorder=3)
    ax.set_xticks(range(len(order)), [labels[j] for j in order], rotation=20 if len(order) > 4 else 0)
    ax.set_xlim(-0.5, len(order) - 0.5)


def _pareto_figure(spec: ExperimentSpec, trials: Sequence[Trial], front: list[int]) -> Figure | None:
    names = spec.objectives[:2]
    points = []
    for t in trials:
        told = (t.metrics or {}).get("objectives") or {}
        if t.state == TrialState.completed and all(isinstance(told.get(n), (int, float)) for n in names):
            points.append((t.number, float(told[names[0]]), float(told[names[1]])))
    if not points:
        return None
    fig = MplFigure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    rest = [p for p in points if p[0] not in front]
    on = sorted((p for p in points if p[0] in front), key=lambda p: p[1])
    if rest:
        ax.scatter([p[1] for p in rest], [p[2] for p in rest], color="#9e9e9e", label="dominated", zorder=2)
    if on:
        ax.plot([p[1] for p in on], [p[2] for p in on], "o-", color="#d62728", label="Pareto front", zorder=3)
    for number, x, y in points:
        ax.annotate(str(number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if names[1] in ("params", "flops_per_image", "peak_memory_bytes") and all(p[2] > 0 for p in points):
        ax.set_yscale("log")
    ax.set_xlabel(f"{names[0]} ({spec.directions[0]})")
    ax.set_ylabel(f"{names[1]} ({spec.directions[1]})")
    ax.set_title("Objectives of the completed trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure("pareto_front", "Pareto front", f"{names[0]} against {names[1]}; trials numbered, the Pareto front "
                  "(trials no other beats on every objective) in red.", _png(fig))


def _importance_figure(importances: dict[str, float], metric: str) -> Figure:
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = MplFigure(figsize=(6.4, 0.9 + 0.45 * len(items)))
    ax = fig.subplots()
    bars = ax.barh([_label(k) for k, _ in items], [v for _, v in items], color="#1f77b4")
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
    ax.set_xlabel(f"importance for {metric} (fANOVA, sums to 1)")
    ax.set_title("Parameter importances")
    ax.grid(alpha=0.3, axis="x")
    return Figure("importances", "Parameter importances", f"How much of the variation of {metric} across completed "
                  "trials each parameter explains (Optuna's fANOVA evaluator).", _png(fig))


# -- rendering -----------------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1280px;
       padding: 0 1em; color: #1d2330; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #e3e6ec; }
.meta { color: #5a6272; } .meta b { color: #1d2330; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25em 1em; }
dt { color: #5a6272; } dd { margin: 0; }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; white-space: nowrap; }
th, td { padding: .35em .5em; border-bottom: 1px solid #e3e6ec; text-align: right; }
th { background: #f4f6f9; position: sticky; top: 0; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; }
tr.best td { background: #fff8e1; font-weight: 600; }
.state-completed { color: #1b7f3b; } .state-pruned { color: #b35c00; } .state-failed { color: #c62828; }
.state-cancelled { color: #6b7280; } .state-running { color: #1565c0; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ec; }
figcaption { color: #5a6272; font-size: .92em; }
.notes { background: #f4f6f9; padding: .6em 1em; border-radius: 4px; }
a { color: #1565c0; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _objective_text(report: Report) -> str:
    s = report.sweep
    return ", ".join(f"{n} ({d})" for n, d in zip(s["objectives"], s["directions"], strict=True))


def render_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 PNG, no scripts."""
    s = report.sweep
    counts = ", ".join(f"{n} {state}" for state, n in s["counts"].items() if n)
    best = "-"
    if report.best_trial is not None:
        best = f"trial {report.best_trial}: {s['metric']} = {s['best_value']:.4f}" if s["best_value"] is not None else "-"
        if s["best_params"]:
            best += " with " + ", ".join(f"{_label(k)}={compare._short(v)}" for k, v in s["best_params"].items())
    links = []
    if report.sweep_run_link:
        links.append(f'<a href="{_e(report.sweep_run_link)}">MLflow: the sweep\'s run</a>')
    if report.dashboard_link:
        links.append(f'<a href="{_e(report.dashboard_link)}">Optuna dashboard: study {_e(s["study_name"])}</a>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vitsweep report: sweep {_e(s['id'])} {_e(s['name'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Sweep {_e(s['id'])}: {_e(s['name'])}</h1>",
        f'<p class="meta">{_e(s["description"]) if s["description"] else ""}</p>',
        "<dl>",
        f"<dt>state</dt><dd><b class=\"state-{_e(s['state'])}\">{_e(s['state'])}</b> ({_e(counts or 'no trials')})</dd>",
        f"<dt>model · dataset</dt><dd>{_e(s['model'])} · {_e(s['dataset'])}</dd>",
        f"<dt>objective</dt><dd>{_e(_objective_text(report))}</dd>",
        f"<dt>trials</dt><dd>{_e(s['n_trials'])}</dd>",
        f"<dt>best</dt><dd>{_e(best)}</dd>",
    ]
    if report.pareto_front is not None:
        parts.append(f"<dt>Pareto front</dt><dd>trials {_e(', '.join(map(str, report.pareto_front)) or '-')}</dd>")
    parts.append(f"<dt>links</dt><dd>{' · '.join(links) or '-'}</dd></dl>")

    parts.append("<h2>Trials</h2>")
    parts.append(_html_table(report))
    if report.figures:
        parts.append("<h2>Figures</h2>")
    for fig in report.figures:
        parts.append(
            f'<figure id="{_e(fig.name)}"><img src="{fig.data_uri()}" alt="{_e(fig.title)}">'
            f"<figcaption><b>{_e(fig.title)}.</b> {_e(fig.caption)}</figcaption></figure>"
        )
    if report.importances:
        parts.append("<h2>Parameter importances</h2><table><tr><th class=\"text\">parameter</th><th>importance</th></tr>")
        parts.extend(f'<tr><td class="text">{_e(k)}</td><td>{v:.3f}</td></tr>' for k, v in report.importances.items())
        parts.append("</table>")
    if report.notes:
        parts.append('<h2>Notes</h2><div class="notes"><ul>')
        parts.extend(f"<li>{_e(n)}</li>" for n in report.notes)
        parts.append("</ul></div>")
    parts.append(f'<p class="meta">Generated by vitsweep on {_e(report.generated_at.strftime("%Y-%m-%d %H:%M UTC"))}.</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(report: Report) -> str:
    text_cols = compare.TEXT_COLUMNS
    head = "".join(f'<th class="{"text" if k in text_cols else ""}">{_e(h)}</th>' for k, h in REPORT_COLUMNS)
    lines = [f'<div class="table"><table id="trials"><thead><tr>{head}<th class="text">MLflow</th></tr></thead><tbody>']
    for r in report.rows:
        cls = "trial best" if r["trial"] == report.best_trial else "trial"
        cells = []
        for k, _ in REPORT_COLUMNS:
            value = compare.cell(k, r.get(k))
            attrs = ' class="text"' if k in text_cols else ""
            if k == "state":
                attrs = f' class="text state-{_e(r["state"])}"'
            if k == "state" and r.get("error"):
                attrs += f' title="{_e(r["error"])}"'
            cells.append(f"<td{attrs}>{_e(value)}</td>")
        link = report.run_links.get(r["trial"])
        cells.append(f'<td class="text"><a href="{_e(link)}">run</a></td>' if link else '<td class="text">-</td>')
        lines.append(f'<tr class="{cls}" data-trial="{_e(r["trial"])}">{"".join(cells)}</tr>')
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """Markdown that refers to the figures by file name (``curves.png``, ...): keep them beside it."""
    s = report.sweep
    out = [f"# Sweep {s['id']}: {s['name']}", ""]
    if s["description"]:
        out += [s["description"], ""]
    counts = ", ".join(f"{n} {state}" for state, n in s["counts"].items() if n)
    out += [
        f"- **state**: {s['state']} ({counts or 'no trials'})",
        f"- **model · dataset**: {s['model']} · {s['dataset']}",
        f"- **objective**: {_objective_text(report)}",
        f"- **trials**: {s['n_trials']}",
    ]
    if report.best_trial is not None and s["best_value"] is not None:
        params = ", ".join(f"{_label(k)}={compare._short(v)}" for k, v in (s["best_params"] or {}).items())
        out.append(f"- **best**: trial {report.best_trial}: {s['metric']} = {s['best_value']:.4f}" + (f" with {params}" if params else ""))
    if report.pareto_front is not None:
        out.append(f"- **Pareto front**: trials {', '.join(map(str, report.pareto_front)) or '-'}")
    if report.sweep_run_link:
        out.append(f"- **MLflow**: [the sweep's run]({report.sweep_run_link})")
    if report.dashboard_link:
        out.append(f"- **Optuna dashboard**: [study {s['study_name']}]({report.dashboard_link})")
    out += ["", "## Trials", "", compare.render(report.rows, "md", REPORT_COLUMNS).rstrip(), ""]
    if report.run_links:
        out.append("MLflow runs: " + " · ".join(f"[trial {n}]({u})" for n, u in sorted(report.run_links.items())))
        out.append("")
    if report.figures:
        out += ["## Figures", ""]
    for fig in report.figures:
        out += [f"![{fig.title}]({fig.file})", "", f"*{fig.title}.* {fig.caption}", ""]
    if report.importances:
        out += ["## Parameter importances", "", "| parameter | importance |", "|---|---|"]
        out += [f"| {k} | {v:.3f} |" for k, v in report.importances.items()]
        out.append("")
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    out.append(f"Generated by vitsweep on {report.generated_at.strftime('%Y-%m-%d %H:%M UTC')}.")
    return "\n".join(out) + "\n"


def bundle(report: Report) -> bytes:
    """A zip of ``report.md`` and its figures, flat, ready to unpack into one directory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.md", render_markdown(report))
        for fig in report.figures:
            archive.writestr(fig.file, fig.png)
    return buf.getvalue()

