"""HTTP requests to the real app with the spec's torch-named optimizers and schedulers, weight decay,
normalisation, splits and budgets: each key accepted, each bad value a 422 naming its path and the valid
choices, with nothing stored."""

from __future__ import annotations

import json
from typing import Any

import optuna
import pytest
import yaml
from sqlalchemy import func, select

from server.core.models import Sweep, Trial
from tests.conftest import SQLITE_ONLY
from tests.helpers import quick_spec

YAML = {"content-type": "application/yaml"}
LR_SPACE = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}


def _count(backends: Any, model: Any) -> int:
    with backends.sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def _submit(client: Any, spec: dict[str, Any]) -> Any:
    return client.post("/api/v1/sweeps", content=yaml.safe_dump(spec), headers=YAML)


ISSUE_SHAPE = """
name: issue-shape
dataset: {name: synthetic, img_size: 8, normalize: none, val_fraction: 0, options: {num_samples: 64, num_classes: 4}}
model: {name: cnn}
train:
  optimizer: {name: AdamW, betas: [0.9, 0.99], weight_decay: 0.05}
  scheduler: {name: OneCycleLR, pct_start: 0.25, anneal_strategy: linear}
  max_steps: 5000
matrix:
  train.lr: [0.001, 0.01]
"""


@SQLITE_ONLY
def test_the_issue_keys_as_a_user_writes_them(client: Any) -> None:
    r = client.post("/api/v1/sweeps", content=ISSUE_SHAPE, headers=YAML)
    assert r.status_code == 201, r.text
    train, dataset = r.json()["spec"]["train"], r.json()["spec"]["dataset"]
    assert train["optimizer"] == {"name": "AdamW", "betas": [0.9, 0.99], "weight_decay": 0.05}
    assert train["scheduler"] == {"name": "OneCycleLR", "pct_start": 0.25, "anneal_strategy": "linear"}
    assert train["max_steps"] == 5000
    assert dataset["normalize"] == "none" and dataset["val_fraction"] == 0
    assert r.json()["metric"] == "train_acc"  # no validation split: the grid's objective is a training metric


ISSUE_AUGMENT = """
name: issue-augment
dataset:
  name: synthetic
  img_size: 32
  options: {num_samples: 64, num_classes: 4}
  augment:
    ops:
      - RandomCrop: {size: [32, 32], padding: 4}
      - RandomHorizontalFlip: {}
      - RandomErasing: {scale: [0.25, 0.25], p: 0.5}
    random_apply: [1, 4]
model: {name: cnn}
train: {epochs: 1, batch_size: 32}
matrix:
  dataset.augment:
    - standard
    - [{TrivialAugment: {}}, {RandomMixUpV2: {}}]
"""


@SQLITE_ONLY
def test_the_issue_augment_pipeline_as_a_user_writes_it(client: Any) -> None:
    """The issue's pipeline, and a matrix over a preset and a list of ops (with MixUp), are accepted as written."""
    r = client.post("/api/v1/sweeps", content=ISSUE_AUGMENT.replace("matrix:", "search_off:").split("search_off:")[0]
                    + "matrix: {train.lr: [0.001]}\n", headers=YAML)
    assert r.status_code == 201, r.text
    augment = r.json()["spec"]["dataset"]["augment"]
    assert augment["ops"][0] == {"RandomCrop": {"size": [32, 32], "padding": 4}} and augment["random_apply"] == [1, 4]
    r = client.post("/api/v1/sweeps", content=ISSUE_AUGMENT, headers=YAML)
    assert r.status_code == 201, r.text
    trials = client.get(f"/api/v1/sweeps/{r.json()['id']}/trials").json()
    assert len(trials["items"] if isinstance(trials, dict) else trials) == 2


ACCEPTED = [
    {"train": {"optimizer": {"name": "SGD", "momentum": 0.9, "nesterov": True}}},
    {"train": {"optimizer": {"name": "Adam"}, "decay_norm_and_bias": True}},
    {"train": {"scheduler": {"name": "OneCycleLR", "anneal_strategy": "linear", "three_phase": True, "pct_start": 0.5,
                             "div_factor": 1e4, "final_div_factor": 1.0, "cycle_momentum": False}}},
    {"train": {"scheduler": {"name": "ReduceLROnPlateau", "monitor": "val_acc", "patience": 2, "factor": 0.5}}},
    {"train": {"scheduler": {"name": "ExponentialLR", "gamma": 0.95}}},
    {"train": {"scheduler": {"name": "CosineAnnealingLR", "eta_min": 1e-6, "interval": "step"}}},
    {"train": {"max_steps": 10}},
    {"train": {"optimizer": {"name": "AdamW", "weight_decay": 0.05}, "scheduler": {"name": "StepLR", "step_size": 2}}},
    {"dataset": {"normalize": "imagenet"}},
    {"dataset": {"normalize": "cifar10"}},
    {"dataset": {"normalize": {"mean": [0.5], "std": [0.5]}}},
    {"dataset": {"normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}}},
]


@SQLITE_ONLY
@pytest.mark.parametrize("changes", ACCEPTED, ids=lambda c: json.dumps(c)[:60])
def test_each_new_key_is_accepted(client: Any, changes: dict[str, Any]) -> None:
    spec = quick_spec(**changes)
    r = _submit(client, spec)
    assert r.status_code == 201, r.text
    stored = r.json()["spec"]
    for section, values in changes.items():
        for key, value in values.items():
            assert stored[section][key] == value


@SQLITE_ONLY
def test_block_keywords_are_searchable_paths(client: Any) -> None:
    spec = quick_spec(
        train={"optimizer": {"name": "AdamW"}, "scheduler": {"name": "OneCycleLR"}},
        search={"sampler": "random", "n_trials": 2, "space": {
            "train.optimizer.betas": {"type": "categorical", "choices": [[0.9, 0.99], [0.9, 0.999]]},
            "train.scheduler.pct_start": {"type": "float", "low": 0.1, "high": 0.5},
        }},
    )
    assert _submit(client, spec).status_code == 201
    grid = quick_spec(train={"optimizer": {"name": "SGD", "momentum": 0.9}}, search=None,
                      matrix={"train.optimizer.nesterov": [False, True], "dataset.normalize": ["none", "dataset"]})
    r = _submit(client, grid)
    assert r.status_code == 201, r.text
    trials = client.get(f"/api/v1/sweeps/{r.json()['id']}/trials").json()
    assert len(trials["items"] if isinstance(trials, dict) else trials) == 4


BAD = [
    # (changes, path below body, fragments of the message)
    ({"train": {"optimizer": {"name": "AdamX"}}}, ["train", "optimizer", "name"], ["unknown optimizer", "AdamW", "SGD"]),
    ({"train": {"optimizer": {"name": "LBFGS"}}}, ["train", "optimizer", "name"], ["closure", "valid: "]),
    ({"train": {"optimizer": "adamx"}}, ["train", "optimizer"], ["adam, adamw, sgd", "torch.optim"]),
    ({"train": {"optimizer": {"name": "AdamW", "betaz": [0.9, 0.99]}}}, ["train", "optimizer", "betaz"],
     ["no keyword 'betaz'", "betas", "eps", "amsgrad"]),
    ({"train": {"optimizer": {"name": "AdamW", "lr": 0.1}}}, ["train", "optimizer", "lr"], ["train.lr"]),
    ({"train": {"optimizer": {"name": "AdamW", "betas": [1.5, 0.9]}}}, ["train", "optimizer", "betas"], ["beta"]),
    ({"train": {"optimizer": {"name": "SGD", "nesterov": True}}}, ["train", "optimizer", "nesterov"], ["momentum"]),
    ({"train": {"optimizer": {"name": "SGD"}, "momentum": 0.5}}, ["train", "momentum"], ["give momentum in it"]),
    ({"train": {"optimizer": {"name": "Rprop"}, "weight_decay": 0.1}}, ["train", "weight_decay"], ["Rprop takes no"]),
    ({"train": {"scheduler": {"name": "OneCycleLRR"}}}, ["train", "scheduler", "name"], ["OneCycleLR", "ExponentialLR"]),
    ({"train": {"scheduler": {"name": "LambdaLR"}}}, ["train", "scheduler", "name"], ["function"]),
    ({"train": {"scheduler": {"name": "OneCycleLR", "pct": 0.3}}}, ["train", "scheduler", "pct"],
     ["pct_start", "anneal_strategy", "three_phase"]),
    ({"train": {"scheduler": {"name": "OneCycleLR", "anneal_strategy": "cosine"}}},
     ["train", "scheduler", "anneal_strategy"], ["'cos' or 'linear'"]),
    ({"train": {"scheduler": {"name": "OneCycleLR", "total_steps": 10}}}, ["train", "scheduler", "total_steps"],
     ["budget"]),
    ({"train": {"scheduler": {"name": "ExponentialLR"}}}, ["train", "scheduler", "gamma"], ["needs 'gamma'"]),
    ({"train": {"scheduler": {"name": "ReduceLROnPlateau", "monitor": "accuracy"}}}, ["train", "scheduler", "monitor"],
     ["val_acc", "train_loss"]),
    ({"train": {"scheduler": {"name": "OneCycleLR"}, "warmup_epochs": 1}}, ["train", "warmup_epochs"], ["short-name"]),
    ({"train": {"max_steps": 10, "max_inputs": 100}}, ["train", "max_steps"], ["not both"]),
    ({"train": {"max_steps": 0}}, ["train", "max_steps"], ["greater than or equal to 1"]),
    ({"dataset": {"normalize": "imagenett"}}, ["dataset", "normalize"], ["dataset, none, imagenet, cifar10"]),
    ({"dataset": {"normalize": {"mean": [0.5, 0.5], "std": [0.5, 0.5]}}}, ["dataset", "normalize"], ["in_chans"]),
    ({"dataset": {"normalize": {"mean": [0.5], "std": [0.0]}}}, ["dataset", "normalize"], ["std must be positive"]),
    ({"dataset": {"normalize": {"mean": [0.5]}}}, ["dataset", "normalize", "std"], ["required"]),
    ({"dataset": {"val_fraction": 0}}, ["search", "metric"], ["val_acc", "train_acc or train_loss"]),
    # dataset.augment: kornia names, keywords and values, each at the path the user wrote
    ({"dataset": {"augment": "standrd"}}, ["dataset", "augment"], ["unknown augment preset", "standard, trivialaugment"]),
    ({"dataset": {"augment": 5}}, ["dataset", "augment"], ["preset name", "{ClassName: {keywords}}"]),
    ({"dataset": {"augment": {"ops": [{"RandomCropp": {"size": [8, 8]}}]}}}, ["dataset", "augment", "ops", 0, "RandomCropp"],
     ["not a kornia augmentation", "RandomCrop", "RandomErasing", "TrivialAugment"]),
    ({"dataset": {"augment": {"ops": [{"RandomHorizontalFlip": {}}, {"RandomCrop": {"size": [8, 8], "paddin": 4}}]}}},
     ["dataset", "augment", "ops", 1, "RandomCrop", "paddin"], ["no keyword 'paddin'", "padding", "padding_mode"]),
    ({"dataset": {"augment": [{"RandomErasing": {"scale": [0.5, 0.1]}}]}}, ["dataset", "augment", 0, "RandomErasing", "scale"],
     ["RandomErasing refuses", "scale"]),
    ({"dataset": {"augment": [{"RandomRotation": {}}]}}, ["dataset", "augment", 0, "RandomRotation", "degrees"],
     ["needs 'degrees'"]),
    ({"dataset": {"augment": [{"RandomCrop": {"size": [4, 4]}}]}}, ["dataset", "augment", 0, "RandomCrop"],
     ["dataset.img_size", "3x4x4"]),
    ({"dataset": {"augment": [{"Normalize": {"mean": [0.5], "std": [0.5]}}]}}, ["dataset", "augment", 0, "Normalize"],
     ["dataset.normalize"]),
    ({"dataset": {"augment": [{"RandomHorizontalFlip": {"keepdim": True}}]}},
     ["dataset", "augment", 0, "RandomHorizontalFlip", "keepdim"], ["set by the worker"]),
    ({"dataset": {"augment": [{"RandomMixUpV2": {}}, {"RandomHorizontalFlip": {}}]}},
     ["dataset", "augment", 1, "RandomHorizontalFlip"], ["after the image ops"]),
    ({"dataset": {"augment": {"ops": [{"RandomHorizontalFlip": {}}], "random_apply": [2, 3]}}},
     ["dataset", "augment", "random_apply"], ["0 <= lo <= hi"]),
    ({"dataset": {"augment": {"ops": [{"RandomHorizontalFlip": {}}], "random_aply": 1}}},
     ["dataset", "augment", "random_aply"], ["extra"]),
    ({"dataset": {"augment": [{"RandomHorizontalFlip": {}, "RandomVerticalFlip": {}}]}}, ["dataset", "augment", 0],
     ["one-key mapping"]),
    ({"dataset": {"val_fraction": 0}, "train": {"scheduler": {"name": "ReduceLROnPlateau"}},
      "search": {"sampler": "random", "n_trials": 2, "metric": "train_loss", "direction": "minimize", "space": LR_SPACE}},
     ["train", "scheduler", "monitor"], ["val_loss", "no validation split"]),
    # A searched keyword of a block must build at every bound; searching into a short name is refused.
    ({"train": {"scheduler": {"name": "OneCycleLR"}}, "search": {"sampler": "random", "n_trials": 2, "space": {
        "train.scheduler.pct_start": {"type": "float", "low": 0.1, "high": 1.5}}}},
     ["search", "space", "train.scheduler.pct_start"], ["pct_start"]),
    ({"search": {"sampler": "random", "n_trials": 2, "space": {
        "train.optimizer.betas": {"type": "categorical", "choices": [[0.9, 0.99]]}}}},
     ["search", "space", "train.optimizer.betas"], ["block"]),
    ({"train": {"optimizer": {"name": "AdamW"}}, "search": None, "matrix": {"train.optimizer.betaz": [[0.9, 0.9]]}},
     ["matrix", "train.optimizer.betaz"], ["no keyword 'betaz'", "betas"]),
    ({"search": {"sampler": "random", "n_trials": 2, "space": {"train.optimizer.betas.x": {
        "type": "categorical", "choices": [1]}}}}, ["search", "space", "train.optimizer.betas.x"], ["one keyword"]),
]


@SQLITE_ONLY  # refused before anything is stored: the backend plays no part
@pytest.mark.parametrize(("changes", "loc", "fragments"), BAD, ids=lambda v: json.dumps(v)[:70])
def test_bad_input_is_a_422_at_its_path_and_stores_nothing(
    client: Any, backends: Any, changes: dict[str, Any], loc: list[str], fragments: list[str]
) -> None:
    r = _submit(client, quick_spec(**changes))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    hits = [d for d in detail if d["loc"] == ["body", *loc]]
    assert hits, detail
    for fragment in fragments:
        assert any(fragment.lower() in d["msg"].lower() for d in hits), (fragment, detail)
    assert _count(backends, Sweep) == 0
    assert _count(backends, Trial) == 0
    assert optuna.get_all_study_names(backends.storage) == []
