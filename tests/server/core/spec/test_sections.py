"""Unit tests of the spec's sections: torch-named optimizer and scheduler blocks, weight decay, normalisation,
splits and budgets, and the paths they open to a search."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from server.core.exceptions import SpecError
from server.core.spec import DatasetSpec, ExperimentSpec, TrainSpec, check_path, torchnames


def _errors(model: type, data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return info.value.errors()


def test_whitelists_are_torch_classes_less_the_unusable_ones() -> None:
    optimizers, schedulers = torchnames.optimizer_names(), torchnames.scheduler_names()
    assert {"Adam", "AdamW", "SGD", "RMSprop", "NAdam", "RAdam", "Adagrad"} <= set(optimizers)
    assert not {"LBFGS", "SparseAdam", "Optimizer"} & set(optimizers)
    assert {"OneCycleLR", "ReduceLROnPlateau", "ExponentialLR", "CosineAnnealingLR", "StepLR", "CyclicLR"} <= set(schedulers)
    assert not {"LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler", "LRScheduler"} & set(schedulers)
    assert all(issubclass(torchnames.optimizer_class(n), torch.optim.Optimizer) for n in optimizers)
    # Only names of the namespace resolve: nothing else of torch, however it is spelled.
    for name in ("Tensor", "os", "__class__", "optim.Adam", "torch.optim.Adam", "adamw"):
        with pytest.raises(torchnames.BlockError, match="valid: "):
            torchnames.optimizer_class(name)


def test_a_block_keeps_its_keywords_and_round_trips() -> None:
    train = TrainSpec.model_validate({"optimizer": {"name": "AdamW", "betas": [0.9, 0.99], "weight_decay": 0.05},
                                      "scheduler": {"name": "OneCycleLR", "pct_start": 0.25}})
    dumped = train.model_dump(mode="json")
    assert dumped["optimizer"] == {"name": "AdamW", "betas": [0.9, 0.99], "weight_decay": 0.05}
    assert TrainSpec.model_validate(dumped) == train
    recipe = torchnames.optimizer_recipe(train)
    assert recipe.cls is torch.optim.AdamW and recipe.keywords == {"betas": (0.9, 0.99)} and recipe.weight_decay == 0.05
    sched = torchnames.scheduler_recipe(train, total_steps=123, epochs=3)
    assert sched is not None and sched.interval == "step"
    assert sched.keywords == {"pct_start": 0.25, "max_lr": train.lr, "total_steps": 123}


def test_filled_keywords_follow_the_interval() -> None:
    epochs = TrainSpec.model_validate({"scheduler": {"name": "CosineAnnealingLR"}})
    steps = TrainSpec.model_validate({"scheduler": {"name": "CosineAnnealingLR", "interval": "step"}})
    given = TrainSpec.model_validate({"scheduler": {"name": "CosineAnnealingLR", "T_max": 7}})
    assert torchnames.scheduler_recipe(epochs, total_steps=100, epochs=5).keywords["T_max"] == 5  # type: ignore[union-attr]
    assert torchnames.scheduler_recipe(steps, total_steps=100, epochs=5).keywords["T_max"] == 100  # type: ignore[union-attr]
    assert torchnames.scheduler_recipe(given, total_steps=100, epochs=5).keywords["T_max"] == 7  # type: ignore[union-attr]
    plateau = TrainSpec.model_validate({"scheduler": {"name": "ReduceLROnPlateau", "monitor": "train_acc"}})
    recipe = torchnames.scheduler_recipe(plateau, total_steps=100, epochs=5)
    assert recipe is not None and recipe.monitor == "train_acc" and recipe.keywords == {"mode": "max"}
    assert torchnames.scheduler_recipe(TrainSpec(), total_steps=100, epochs=5) is None  # short names: LambdaLR


@pytest.mark.parametrize(
    ("train", "loc", "fragment"),
    [
        ({"optimizer": {"name": "AdamW", "betaz": 1}}, ("optimizer", "betaz"), "valid: betas, eps, weight_decay"),
        ({"optimizer": {"name": "AdamW", "params": []}}, ("optimizer", "params"), "model's parameter groups"),
        ({"optimizer": {"name": "AdamW", "fused": True}}, ("optimizer", "fused"), "train.fused_optimizer"),
        ({"optimizer": {"name": "AdamW", "betas": [0.9]}}, ("optimizer", "betas"), "refuses"),
        ({"optimizer": {"name": "AdamW", "eps": "small"}}, ("optimizer", "eps"), "refuses"),
        ({"optimizer": {"betas": [0.9, 0.9]}}, ("optimizer", "name"), "needs name"),
        ({"optimizer": {"name": "AdamW", "weight_decay": 0.1}, "weight_decay": 0.2}, ("weight_decay",), "twice"),
        ({"optimizer": {"name": "AdamW"}, "nesterov": True}, ("nesterov",), "optimizer: sgd"),
        ({"optimizer": "sgd", "nesterov": True, "momentum": 0.0}, ("momentum",), "Nesterov momentum requires"),
        ({"scheduler": {"name": "OneCycleLR", "max_lr": 1}}, ("scheduler", "max_lr"), "train.lr"),
        ({"scheduler": {"name": "OneCycleLR", "epochs": 1}}, ("scheduler", "epochs"), "budget"),
        ({"scheduler": {"name": "CyclicLR"}}, ("scheduler", "base_lr"), "needs 'base_lr'"),
        ({"scheduler": {"name": "StepLR", "step_size": 2, "interval": "batch"}}, ("scheduler", "interval"), "step, epoch"),
        ({"scheduler": {"name": "OneCycleLR"}, "gamma": 0.5}, ("gamma",), "short-name"),
        ({"max_steps": 1, "max_inputs": 1}, ("max_steps",), "not both"),
    ],
)
def test_bad_train_sections_name_their_path(train: dict[str, Any], loc: tuple[str, ...], fragment: str) -> None:
    errors = _errors(TrainSpec, train)
    assert [e["loc"] for e in errors] == [loc], errors
    assert fragment in errors[0]["msg"]


@pytest.mark.parametrize(
    ("normalize", "in_chans", "expected"),
    [
        ("dataset", 3, None),
        ("none", 1, ((0.0,), (1.0,))),
        ("imagenet", 3, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
        ("cifar10", 3, ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))),
        ({"mean": [0.5], "std": [0.5]}, 3, ((0.5,) * 3, (0.5,) * 3)),
        ({"mean": [0.1, 0.2], "std": [0.3, 0.4]}, 2, ((0.1, 0.2), (0.3, 0.4))),
    ],
)
def test_normalization(normalize: Any, in_chans: int, expected: Any) -> None:
    assert DatasetSpec(name="digits", in_chans=in_chans, normalize=normalize).normalization() == expected


@pytest.mark.parametrize(
    ("dataset", "loc", "fragment"),
    [
        ({"normalize": "imagenet", "in_chans": 1}, ("normalize",), "3 channel(s)"),
        ({"normalize": {"mean": [0.5, 0.5], "std": [0.5]}}, ("normalize",), "one value per channel"),
        ({"normalize": {"mean": [0.5], "std": [-1]}}, ("normalize",), "std must be positive"),
        ({"normalize": {"mean": [0.5], "std": [0.5], "x": 1}}, ("normalize", "x"), "Extra inputs"),
        ({"normalize": 0.5}, ("normalize",), "dataset, none, imagenet, cifar10"),
        ({"val_fraction": -0.1}, ("val_fraction",), "greater than or equal to 0"),
    ],
)
def test_bad_dataset_sections_name_their_path(dataset: dict[str, Any], loc: tuple[str, ...], fragment: str) -> None:
    errors = _errors(DatasetSpec, {"name": "digits", **dataset})
    assert [e["loc"] for e in errors] == [loc], errors
    assert fragment in errors[0]["msg"]


def test_block_keywords_are_paths() -> None:
    for path in ("train.optimizer", "train.optimizer.betas", "train.scheduler.pct_start", "train.max_steps",
                 "dataset.normalize", "train.decay_norm_and_bias"):
        check_path(path)
    with pytest.raises(ValueError, match="one keyword"):
        check_path("train.optimizer.betas.first")
    with pytest.raises(ValueError, match="no sub-fields"):
        check_path("train.lr.x")


def _spec(**changes: Any) -> ExperimentSpec:
    data: dict[str, Any] = {"name": "s", "dataset": {"name": "digits"}, "model": {"name": "cnn"}, "matrix": {"train.lr": [0.1]}}
    data.update(changes)
    return ExperimentSpec.model_validate(data)


def test_resolve_writes_block_keywords_and_refuses_them_on_a_short_name() -> None:
    spec = _spec(train={"optimizer": {"name": "AdamW"}})
    resolved = spec.resolve({"train.optimizer.betas": [0.8, 0.9]})
    assert resolved.train.optimizer.keywords == {"betas": [0.8, 0.9]}  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="betaz"):
        spec.resolve({"train.optimizer.betaz": 1})
    with pytest.raises(SpecError, match="as a block") as info:
        _spec().resolve({"train.optimizer.betas": [0.8, 0.9]})
    assert info.value.loc == ("matrix", "train.optimizer.betas")


def test_without_validation_the_objective_is_a_training_metric() -> None:
    assert _spec(dataset={"name": "digits", "val_fraction": 0}).metric == "train_acc"
    assert _spec().metric == "val_acc"
    space = {"train.lr": {"type": "float", "low": 0.1, "high": 1.0}}
    errors = _errors(ExperimentSpec, {"name": "s", "dataset": {"name": "digits", "val_fraction": 0}, "model": {"name": "cnn"},
                                      "search": {"n_trials": 2, "metrics": ["val_loss", "param_count"],
                                                 "directions": ["minimize", "minimize"], "space": space}})
    assert [e["loc"] for e in errors] == [("search", "metrics")] and "train_acc or train_loss" in errors[0]["msg"]
