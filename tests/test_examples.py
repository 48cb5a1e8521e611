"""Every spec under examples/ is valid, down to building its models (on the meta device)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from server.core.spec import ExperimentSpec, validate_plan
from worker.catalog import WORKER_CATALOG

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    spec = ExperimentSpec.model_validate(yaml.safe_load(path.read_text()))
    validate_plan(spec, WORKER_CATALOG)
    assert spec.planned_trials() >= 1


def test_demo_spec_is_valid() -> None:
    from server.cli import DEMO_SPEC

    validate_plan(ExperimentSpec.model_validate(yaml.safe_load(DEMO_SPEC)), WORKER_CATALOG)
