"""Plan checks without the API: every point of a plan resolves, names what the worker has, and builds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from server.core.exceptions import SpecError
from server.core.spec import ExperimentSpec, search_corners, validate_plan
from tests.helpers import quick_spec
from worker.catalog import WORKER_CATALOG


class TinyCatalog:
    """A catalog of one dataset and one preset: the plan checks use whatever catalog they are given."""

    def datasets(self) -> Sequence[str]:
        return ["synthetic"]

    def dataset_options(self, name: str) -> Mapping[str, Any]:
        return {"num_samples": 0, "num_classes": 0}

    def augments(self) -> Sequence[str]:
        return ["none"]

    def missing_data(self, name: str, root: Path, options: Mapping[str, Any], *, download: bool) -> str | None:
        return None


def spec(**changes: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate(quick_spec(**changes))


def test_corners_touch_every_bound_and_choice() -> None:
    s = spec(search={"n_trials": 2, "space": {
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "train.optimizer": {"type": "categorical", "choices": ["adamw", "sgd", "adam"]},
    }})
    points = search_corners(s)
    assert points[0] == ({"train.lr": 1e-4, "train.optimizer": "adamw"}, None)
    assert ({"train.lr": 1e-2, "train.optimizer": "adamw"}, "train.lr") in points
    assert {p["train.optimizer"] for p, _ in points} == {"adamw", "sgd", "adam"}


def test_a_family_keyword_is_checked_with_its_family_chosen() -> None:
    s = spec(model={"name": "cnn", "arch_by_model": {"vit": {"patch_size": 4}}}, search={"n_trials": 2, "space": {
        "model.name": {"type": "categorical", "choices": ["cnn", "vit"]},
        "model.arch_by_model.vit.num_layers": {"type": "int", "low": 1, "high": 2},
    }})
    varied = [p for p, path in search_corners(s) if path == "model.arch_by_model.vit.num_layers"]
    assert varied and all(p["model.name"] == "vit" for p in varied)


def test_names_are_checked_against_the_catalog_given() -> None:
    validate_plan(spec(), TinyCatalog(), build_model=False)
    with pytest.raises(SpecError) as exc:
        validate_plan(spec(dataset={"augment": "standard"}), TinyCatalog(), build_model=False)
    assert exc.value.loc == ("dataset", "augment") and "valid: none" in exc.value.msg
    validate_plan(spec(dataset={"augment": "standard"}), WORKER_CATALOG, build_model=False)
    with pytest.raises(SpecError) as exc:
        validate_plan(spec(dataset={"name": "cifar100"}), WORKER_CATALOG, build_model=False)
    assert exc.value.loc == ("dataset", "name") and "cifar10" in exc.value.msg


def test_a_grid_point_naming_an_unknown_dataset_is_blamed_on_its_entry() -> None:
    s = spec(search=None, matrix={"dataset.name": ["synthetic", "nope"]})
    with pytest.raises(SpecError) as exc:
        validate_plan(s, WORKER_CATALOG, build_model=False)
    assert exc.value.loc == ("matrix", "dataset.name") and "unknown dataset 'nope'" in exc.value.msg


def test_an_unbuildable_bound_is_blamed_on_its_search_entry() -> None:
    s = spec(model={"name": "vit", "arch": {"patch_size": 4, "hidden_dim": 16}}, search={"n_trials": 2, "space": {
        "model.arch.num_heads": {"type": "int", "low": 2, "high": 3},
    }})
    with pytest.raises(SpecError) as exc:
        validate_plan(s, WORKER_CATALOG)
    assert exc.value.loc == ("search", "space", "model.arch.num_heads") and "cannot be built" in exc.value.msg


def test_sampler_and_pruner_options_are_their_own_keywords() -> None:
    with pytest.raises(SpecError) as exc:
        validate_plan(spec(search={**quick_spec()["search"], "sampler_options": {"bogus": 1}}), WORKER_CATALOG,
                      build_model=False)
    assert exc.value.loc == ("search", "sampler_options") and "refuses these options" in exc.value.msg
    validate_plan(spec(search={**quick_spec()["search"], "sampler": "tpe",
                               "sampler_options": {"seed": 3, "n_startup_trials": 2}}), WORKER_CATALOG, build_model=False)


def test_an_absurd_parameter_count_is_refused_naming_its_entry() -> None:
    """Wide enough layers build instantly on the meta device, yet no device could train them."""
    def wide(high: int) -> ExperimentSpec:
        return spec(model={"name": "vit", "arch": {"patch_size": 4, "num_layers": 1, "num_heads": 2}}, search={
            "n_trials": 2, "space": {"model.arch.mlp_dim": {"type": "categorical", "choices": [32, 65_536]},
                                     "model.arch.hidden_dim": {"type": "int", "low": 16, "high": high}}})

    validate_plan(wide(4096), WORKER_CATALOG)  # 200 million parameters: large, but a device trains it
    with pytest.raises(SpecError) as exc:
        validate_plan(wide(65_536), WORKER_CATALOG)  # one layer of attention 65,536 wide: 17 billion
    assert exc.value.loc == ("search", "space", "model.arch.hidden_dim")
    assert "17,189,044,266 parameters, more than 10,000,000,000" in exc.value.msg, exc.value.msg


def test_an_architecture_integer_beyond_the_bound_is_blamed_on_its_search_entry() -> None:
    s = spec(model={"name": "vit", "arch": {"patch_size": 4}}, search={"n_trials": 2, "space": {
        "model.arch.hidden_dim": {"type": "int", "low": 16, "high": 32},
        "model.arch.num_layers": {"type": "int", "low": 1, "high": 2**53},
    }})
    with pytest.raises(SpecError) as exc:
        validate_plan(s, WORKER_CATALOG, build_model=False)
    assert exc.value.loc == ("search", "space", "model.arch.num_layers")
    assert exc.value.msg.startswith("model.arch.num_layers = 9007199254740992:") and "at most 65536" in exc.value.msg


def test_grids_are_counted_before_their_points_are_made() -> None:
    """The grid sampler's space counts against the trial limit as a matrix does, and a large space costs only
    the points checked."""
    axes = {p: {"type": "categorical", "choices": list(range(1, 101))} for p in ("train.seed", "train.batch_size")}
    assert spec(search={"sampler": "grid", "n_trials": 1, "space": axes}).planned_trials() == 10_000
    with pytest.raises(ValidationError, match=r"more than 10000 combinations: 100 x 100 x 101 = 1010000"):
        spec(search={"sampler": "grid", "n_trials": 1, "space": {
            **axes, "train.epochs": {"type": "categorical", "choices": list(range(1, 102))}}})
    with pytest.raises(ValidationError, match=r"more than 10000 combinations: 101 x 100"):
        spec(search=None, matrix={"train.seed": list(range(101)), "train.batch_size": list(range(1, 101))})
    big = spec(search=None, matrix={"train.seed": list(range(100)), "train.batch_size": list(range(1, 101))})
    assert len(search_corners(big)) == 256 and len(search_corners(big, limit=10)) == 10
