"""The experiment spec: what a user submits, validated once at the boundary.

A spec is declarative. Names (models, datasets, augmentations) resolve through registries and nothing in it
is executed. The package reads in the order a spec is checked:

- ``limits``: the document as a whole (sizes, types, nesting), before anything else;
- ``paths``: dotted paths (``train.lr``), setting them, and the slug that names a grid point;
- ``sections``, ``search``, ``experiment``: the pydantic models of the spec's sections and of the whole;
- ``catalog`` and ``plan``: every trial the plan can make resolves, names what the worker has, and builds;
- ``documents``: JSON and YAML text to values, with repeated keys kept track of for ``check_document``;
- ``isolation``: the plan check in a child process with a time and memory budget (what the API runs).
"""

from __future__ import annotations

from server.core.exceptions import SpecError
from server.core.objectives import EPOCH_METRICS, Direction, EpochMetric, Objective
from server.core.spec.catalog import Catalog
from server.core.spec.documents import load_json, load_yaml
from server.core.spec.experiment import ExperimentSpec
from server.core.spec.limits import MAX_TRIALS, check_document
from server.core.spec.paths import set_path, slug
from server.core.spec.plan import model_choices, search_corners, validate_plan
from server.core.spec.search import CategoricalParam, FloatParam, IntParam, Param, SearchSpec
from server.core.spec.sections import DatasetSpec, ModelSpec, TrainSpec, check_path

__all__ = [
    "EPOCH_METRICS",
    "MAX_TRIALS",
    "Catalog",
    "CategoricalParam",
    "DatasetSpec",
    "Direction",
    "EpochMetric",
    "ExperimentSpec",
    "FloatParam",
    "IntParam",
    "ModelSpec",
    "Objective",
    "Param",
    "SearchSpec",
    "SpecError",
    "TrainSpec",
    "check_document",
    "check_path",
    "load_json",
    "load_yaml",
    "model_choices",
    "search_corners",
    "set_path",
    "slug",
    "validate_plan",
]
