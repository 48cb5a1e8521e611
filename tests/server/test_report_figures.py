"""The report's parameter figures, drawn from trials as the store holds them: integer parameters get integer
ticks, a log axis narrower than a decade keeps several readable labels, and a parameter has one label in the
figures, the table and the best-trial line. The PNGs are written under the test's tmp_path to look at."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure as MplFigure

from server import compare
from server.core.models import Trial, TrialState
from server.core.spec import ExperimentSpec
from server.report import figures, render
from tests.helpers import quick_spec

SPACE = {
    "model.arch.width": {"type": "int", "low": 8, "high": 64, "log": True},
    "model.arch.depth": {"type": "int", "low": 2, "high": 6},
    "train.lr": {"type": "float", "low": 5e-4, "high": 5e-3, "log": True},
    "train.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
}
POINTS = [(8, 2, 5.2e-4, 1e-6), (13, 3, 9e-4, 3e-5), (21, 4, 1.6e-3, 2e-4), (34, 5, 2.9e-3, 5e-3), (60, 6, 4.8e-3, 0.09)]


def _trials() -> list[Trial]:
    out = []
    for n, (width, depth, lr, wd) in enumerate(POINTS):
        params = {"model.arch.width": width, "model.arch.depth": depth, "train.lr": lr, "train.weight_decay": wd}
        out.append(Trial(sweep_id=1, number=n, params=params, value=0.5 + 0.08 * n,
                         state=TrialState.pruned if n == 1 else TrialState.completed))
    return out


def _labels(fig: MplFigure) -> tuple[str, list[tuple[float, str]]]:
    """The x axis' label and its visible major tick labels (position, text) as drawn."""
    ax = fig.axes[0]
    low, high = sorted(ax.get_xlim())
    ticks = [(t.get_position()[0], t.get_text()) for t in ax.get_xticklabels()]
    return ax.get_xlabel(), [(x, s) for x, s in ticks if s and low <= x <= high]


def test_parameter_axes_are_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ExperimentSpec.model_validate(quick_spec(
        model={"name": "cnn"}, search={"sampler": "random", "n_trials": 5, "space": SPACE}))
    drawn: list[MplFigure] = []
    real_png = figures._png

    def keep(fig: MplFigure) -> bytes:
        png = real_png(fig)  # drawing lays out the ticks
        drawn.append(fig)
        return png

    monkeypatch.setattr(figures, "_png", keep)
    made = figures.against_params(spec, _trials(), best=4)
    assert len(made) == len(SPACE) == len(drawn)
    for fig in made:
        (tmp_path / fig.file).write_bytes(fig.png)
    axes: dict[str, Any] = {path: _labels(fig) for path, fig in zip(SPACE, drawn, strict=True)}

    for path in ("model.arch.width", "model.arch.depth"):  # integers: every label an integer, several of them
        _, ticks = axes[path]
        assert len(ticks) >= 3, (path, ticks)
        assert all(text.isdigit() for _, text in ticks), (path, ticks)
        assert all(x == round(x) for x, _ in ticks), (path, ticks)
    # A log axis narrower than a decade (5e-4 .. 5e-3): several labels, plain numbers, at their values.
    _, ticks = axes["train.lr"]
    assert len(ticks) >= 3, ticks
    for x, text in ticks:
        assert "10^" not in text and "$" not in text and math.isclose(float(text), x, rel_tol=1e-6), ticks
    # A wide one (5 decades) is labelled too, not crowded.
    _, ticks = axes["train.weight_decay"]
    assert 3 <= len(ticks) <= 8, ticks

    # One label per parameter: figures (axis, title), the comparison table and the best-trial line agree.
    for path, fig, made_fig in zip(SPACE, drawn, made, strict=True):
        short = path.rsplit(".", 1)[-1]
        assert axes[path][0].split(" (")[0] == short
        assert fig.axes[0].get_title().startswith(f"val_acc against {short} on ")
        assert made_fig.title == f"val_acc against {short}"
    assert compare.format_params({"model.arch.depth": 4, "train.lr": 0.001}) == "depth=4, lr=0.001"
    assert render.label("model.arch.depth") == "depth" == figures.label("model.arch.depth")
    assert compare.param_label("model.arch_by_model.vit.num_layers") == "vit.num_layers"
    print(f"figures written to {tmp_path}")
