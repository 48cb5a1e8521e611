"""Plan checks without the API: every point of a plan resolves, names what the worker has, and builds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

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
