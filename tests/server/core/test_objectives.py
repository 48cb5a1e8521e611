"""The one rule for "better": by direction, NaN and infinity never best; Pareto fronts; a trial's objectives."""

from __future__ import annotations

import math

import pytest

from server.core.objectives import best, better, objective_values, pareto_front, rank_key, sign


def test_better_and_best_follow_the_direction() -> None:
    assert better(0.9, 0.8, "maximize") and not better(0.8, 0.9, "maximize")
    assert better(0.1, 0.2, "minimize") and better(0.5, None, "minimize")
    assert not better(float("nan"), None, "maximize") and not better(math.inf, 1.0, "maximize")
    assert best([0.2, float("nan"), 0.7, None, 0.5], "maximize") == 0.7
    assert best([0.2, float("nan"), 0.7], "minimize") == 0.2
    assert best([float("nan")], "minimize") is None
    assert sorted([0.3, None, 0.9, 0.1], key=lambda v: rank_key(v, "maximize")) == [0.9, 0.3, 0.1, None]
    with pytest.raises(ValueError, match="maximize or minimize"):
        sign("max")  # type: ignore[arg-type]


def test_pareto_front() -> None:
    points = {0: [0.9, 100.0], 1: [0.8, 50.0], 2: [0.7, 60.0], 3: [0.9, 100.0]}
    assert pareto_front(points, ["maximize", "minimize"]) == [0, 1, 3]  # 2 is beaten by 1 on both; ties stay


def test_objective_values_of_a_trial() -> None:
    history = [{"val_acc": 0.5}, {"val_acc": 0.8}, {"val_acc": float("nan")}]
    assert objective_values(["val_acc", "param_count"], ["maximize", "minimize"], history, {"param_count": 10}) == [0.8, 10.0]
    assert objective_values(["val_acc", "param_count"], ["maximize", "minimize"], history, {}) is None
