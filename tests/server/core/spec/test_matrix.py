"""Matrices as GitHub Actions writes them: a product of lists, ``exclude`` removing partial points, ``include``
extending combinations or adding points; counted before any point is made."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.core.exceptions import SpecError
from server.core.spec import ExperimentSpec, validate_plan
from server.core.spec.matrix import check_matrix, expand
from tests.helpers import quick_spec
from worker.catalog import WORKER_CATALOG


def spec(matrix: dict[str, Any] | None, **changes: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate(quick_spec(search=None, matrix=matrix, **changes))


def test_lists_are_the_product_and_exclude_removes_partial_points() -> None:
    points = expand({"a.x": [1, 2], "a.y": ["p", "q"], "exclude": [{"a.x": 1, "a.y": "q"}, {"a.x": 2, "a.y": "p"}]})
    assert points == [({"a.x": 1, "a.y": "p"}, None), ({"a.x": 2, "a.y": "q"}, None)]


def test_include_extends_matching_combinations_or_adds_a_point() -> None:
    # GitHub Actions' own example: the product's values are never overwritten, added ones may be.
    matrix = {
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    }
    got = [p for p, _ in expand(matrix)]
    assert got == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_include_alone_is_exactly_its_points_with_their_origin() -> None:
    include = [{"model.arch.depth": 2, "model.arch.num_latents": 32}, {"model.arch.depth": 4, "train.lr": 0.1}]
    assert expand({"include": include}) == [(include[0], 0), (include[1], 1)]


def test_a_single_run_is_one_empty_point() -> None:
    s = ExperimentSpec.model_validate(quick_spec(search=None))
    assert s.is_grid and s.grid_points() == [{}] and s.planned_trials() == 1 and s.searched_paths() == []
    with pytest.raises(ValidationError, match="at most one of"):
        ExperimentSpec.model_validate(quick_spec(matrix={"train.lr": [0.1]}))


@pytest.mark.parametrize("matrix,fragment", [
    ({"exclude": [{"train.lr": 0.1}]}, "does not vary"),
    ({"train.lr": [0.1], "exclude": [{"train.seed": 1}]}, "names train.seed"),
    ({"train.lr": [0.1], "include": {"train.lr": 0.2}}, "must be a list of points"),
    ({"include": [{}]}, "non-empty mapping"),
    ({"include": [[1, 2]]}, "non-empty mapping"),
    ({"train.lr": 0.1}, "must be a list"),
    # 100**4 combinations: refused by counting, before a single point is made
    ({f"model.arch.k{i}": list(range(100)) for i in range(4)}, "100 x 100 x 100 x 100 = 100000000"),
    ({"train.lr": list(range(1, 101)), "train.seed": list(range(100)), "include": [{"train.epochs": 1}]}, "more than"),
])
def test_bad_matrices_are_refused_naming_the_entry(matrix: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_matrix(matrix)


def test_a_point_may_set_a_whole_block() -> None:
    s = spec({"include": [
        {"model": {"name": "vit", "arch": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 8, "mlp_dim": 8}}},
        {"model.arch": {"width": 8}, "dataset.img_size": 16},
    ]})
    validate_plan(s, WORKER_CATALOG)
    first, second = (s.resolve(p) for p in s.grid_points())
    assert first.model.name == "vit" and first.model.arch["num_layers"] == 1
    assert second.model.name == "cnn" and second.model.arch == {"width": 8} and second.dataset.img_size == 16


def test_a_point_that_cannot_be_built_is_refused_naming_it() -> None:
    s = spec({"model.name": ["vit"], "include": [
        {"model.arch.num_heads": 2, "model.arch.hidden_dim": 8},
        {"model.arch.num_heads": 3, "model.arch.hidden_dim": 8},  # 8 is not divisible by 3
    ]}, model={"name": "vit", "arch": {"patch_size": 4, "num_layers": 1, "mlp_dim": 8}})
    # the second include extends the one combination, after the first: the point is the second's
    with pytest.raises(SpecError) as exc:
        validate_plan(s, WORKER_CATALOG)
    assert exc.value.loc[:3] == ("matrix", "include", 1), exc.value.loc
    assert "num_heads" in exc.value.msg or "hidden_dim" in exc.value.msg


def test_an_include_point_with_a_bad_path_names_its_entry() -> None:
    s = spec({"include": [{"train.lr": 0.1}, {"train.nope": 1}]})
    with pytest.raises(SpecError) as exc:
        validate_plan(s, WORKER_CATALOG, build_model=False)
    assert exc.value.loc == ("matrix", "include", 1, "train.nope") and "has no field" in exc.value.msg
