"""The plan check in a child process: the same answers as in-process, and a check past its time or memory budget
stopped and refused, naming the model that was being built. Real child processes, forked from a fork server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from server.core.exceptions import SpecError
from server.core.spec import ExperimentSpec
from server.core.spec.isolation import CheckBudget, CheckerCrashed, PlanChecker
from tests.helpers import quick_spec
from worker.catalog import WORKER_CATALOG

pytestmark = pytest.mark.slow  # the fork server imports torch and the models once per test process

WORKER_PRELOAD = ("worker.catalog", "worker.data", "worker.augment")  # as the API's checker preloads them
DEEP = 60_000  # layers: minutes and gigabytes to build, even on the meta device


def vit_search(high: int) -> ExperimentSpec:
    return ExperimentSpec.model_validate(quick_spec(
        model={"name": "vit", "arch": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}},
        search={**quick_spec()["search"], "space": {"model.arch.num_layers": {"type": "int", "low": 1, "high": high}}},
    ))


class BrokenCatalog:
    """A catalog that fails as a bug would: the check reports it as ours, not the spec's."""

    def datasets(self) -> Sequence[str]:
        raise RuntimeError("the dataset registry is broken")

    def dataset_options(self, name: str) -> Mapping[str, Any]:
        return {}

    def augments(self) -> Sequence[str]:
        return ["none"]


def checker(seconds: float = 60, memory_mb: int = 4096, catalog: Any = WORKER_CATALOG) -> PlanChecker:
    return PlanChecker(catalog, CheckBudget(seconds=seconds, memory_bytes=memory_mb << 20), preload=WORKER_PRELOAD)


def test_answers_as_the_check_in_process() -> None:
    check = checker()
    check.check(vit_search(4))
    bad = ExperimentSpec.model_validate(quick_spec(search={**quick_spec()["search"], "space": {
        "model.arch.num_heads": {"type": "categorical", "choices": [2, 3]}}},
        model={"name": "vit", "arch": {"patch_size": 4, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}}))
    with pytest.raises(SpecError) as exc:
        check.check(bad)
    assert exc.value.loc == ("search", "space", "model.arch.num_heads") and "cannot be built" in exc.value.msg


def test_a_check_past_its_time_is_stopped_naming_the_model() -> None:
    with pytest.raises(SpecError) as exc:
        checker(seconds=3).check(vit_search(DEEP))
    assert exc.value.loc == ("search", "space", "model.arch.num_layers")
    assert "took longer than 3 s while building model 'vit'" in exc.value.msg, exc.value.msg
    assert f"'model.arch.num_layers': {DEEP}" in exc.value.msg


def test_a_check_past_its_memory_is_stopped_naming_the_model() -> None:
    with pytest.raises(SpecError) as exc:
        checker(memory_mb=64).check(vit_search(DEEP))
    assert exc.value.loc == ("search", "space", "model.arch.num_layers")
    assert "needed more than 64 MiB of memory while building model 'vit'" in exc.value.msg, exc.value.msg


def test_a_failure_of_ours_is_not_blamed_on_the_spec() -> None:
    with pytest.raises(CheckerCrashed, match="the dataset registry is broken"):
        checker(catalog=BrokenCatalog()).check(vit_search(2))
