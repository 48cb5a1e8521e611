"""The report's figures: PNG images drawn with matplotlib's object API (Agg, no pyplot state), so reports
can be built from API threads: every trial's validation curves, the objective against each searched parameter,
the Pareto front of a multi-objective search, and parameter importances."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure as MplFigure

from server.compare import param_label
from server.core.models import Trial, TrialState
from server.core.spec import CategoricalParam, ExperimentSpec, FloatParam, IntParam

DPI = 100
CURVE_METRICS = ("val_acc", "val_loss")
MAX_LEGEND = 20  # more trials than this: no legend, the best one is still named
STATE_COLORS = {"completed": "#1f77b4", "pruned": "#ff7f0e", "failed": "#d62728", "cancelled": "#7f7f7f", "running": "#2ca02c"}
Histories = dict[int, dict[str, list[tuple[int, float]]]]


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



label = param_label  # one name per searched path, the comparison table's


def numeric_axis(ax: Axes, dist: FloatParam | IntParam, values: Sequence[float]) -> None:
    """The x axis of a numeric parameter: integer ticks for an integer one; on a log scale, ticks at 1, 2 and 5
    per decade labelled as plain numbers (matplotlib labels only powers of ten, so an axis narrower than a
    decade had one label, or none)."""
    if dist.log:
        ax.set_xscale("log")
        low, high = min(min(values), dist.low), max(max(values), dist.high)
        ax.set_xlim(low / 1.15, high * 1.15)
        decades = math.log10(high / low) if low > 0 else math.inf
        subs = (1.0, 2.0, 5.0) if decades <= 1.2 else (1.0, 3.0) if decades <= 2.2 else (1.0,)
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        ax.xaxis.set_minor_locator(ticker.LogLocator(base=10, subs=tuple(range(1, 10))))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    elif isinstance(dist, IntParam):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if isinstance(dist, IntParam):
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:.0f}" if v == round(v) else ""))


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def curves(trials: Sequence[Trial], histories: Histories, metric: str, best: int | None) -> Figure:
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
    return {p: CategoricalParam(type="categorical", choices=v) for p, v in spec.grid_axes().items()}


def against_params(spec: ExperimentSpec, trials: Sequence[Trial], best: int | None) -> list[Figure]:
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
            if isinstance(dist, (FloatParam, IntParam)):
                numeric_axis(ax, dist, [float(v) for _, v in points])
        for t, v in points:
            if t.number == best and not isinstance(dist, CategoricalParam):
                ax.scatter([v], [_value(t)], s=160, facecolors="none", edgecolors="black", linewidths=1.5, zorder=4,
                           label=f"best (trial {t.number})")
        ax.set_xlabel(label(path) + (" (log scale)" if getattr(dist, "log", False) else ""))
        ax.set_ylabel(f"{spec.metric} (best epoch)")
        ax.set_title(f"{spec.metric} against {label(path)} on {spec.dataset.name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        name = f"param_{i + 1:02d}_" + re.sub(r"[^A-Za-z0-9_]+", "_", path)[:60]
        figures.append(Figure(name, f"{spec.metric} against {label(path)}",
                              f"Each trial's {spec.metric} at its best epoch against its {label(path)} ({path})"
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


def pareto_figure(spec: ExperimentSpec, trials: Sequence[Trial], front: list[int]) -> Figure | None:
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
    if names[1] in ("param_count", "flops_per_image", "peak_memory_bytes") and all(p[2] > 0 for p in points):
        ax.set_yscale("log")
    ax.set_xlabel(f"{names[0]} ({spec.directions[0]})")
    ax.set_ylabel(f"{names[1]} ({spec.directions[1]})")
    ax.set_title("Objectives of the completed trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure("pareto_front", "Pareto front", f"{names[0]} against {names[1]}; trials numbered, the Pareto front "
                  "(trials no other beats on every objective) in red.", _png(fig))


def importance_figure(importances: dict[str, float], metric: str) -> Figure:
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = MplFigure(figsize=(6.4, 0.9 + 0.45 * len(items)))
    ax = fig.subplots()
    bars = ax.barh([label(k) for k, _ in items], [v for _, v in items], color="#1f77b4")
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
    ax.set_xlabel(f"importance for {metric} (fANOVA, sums to 1)")
    ax.set_title("Parameter importances")
    ax.grid(alpha=0.3, axis="x")
    return Figure("importances", "Parameter importances", f"How much of the variation of {metric} across completed "
                  "trials each parameter explains (Optuna's fANOVA evaluator).", _png(fig))
