"""``fit`` and the worker's data path with the spec's torch-named optimizers and schedulers, weight decay
defaults, ``max_steps``, ``dataset.normalize`` and ``val_fraction: 0``, on the real digits data on the CPU."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from server.core.spec import ExperimentSpec, TrainSpec
from worker.data import DatasetSplits, load_dataset
from worker.engine import EpochReport, FitResult, evaluate, fit
from worker.engine.budget import Budget
from worker.engine.loader import Preprocess
from worker.engine.optim import build_optimizer
from worker.exceptions import TrialStopped
from worker.training import DataCache

CPU = torch.device("cpu")
IMG_SIZE = 16
SMALL_CNN = {"width": 16, "depth": 2, "hidden_dim": 64}


def make_spec(dataset: dict[str, Any] | None = None, **train: Any) -> ExperimentSpec:
    """A resolved single-trial spec on 16x16 gray digits; ``train`` overrides quick defaults."""
    train = {"epochs": 1, "batch_size": 64, "lr": 2e-2, "num_workers": 0, "svc_probe": False, "plots": False, **train}
    spec = ExperimentSpec(
        name="engine-spec-keys",
        dataset={"name": "digits", "img_size": IMG_SIZE, "in_chans": 1, **(dataset or {})},
        model={"name": "cnn", "arch": SMALL_CNN},
        train=train,
        matrix={"_": [0]},
    )
    return spec.resolve({})


def make_model(spec: ExperimentSpec) -> nn.Module:
    from vitmodels import create_model

    torch.manual_seed(0)
    return create_model("cnn", num_classes=10, img_size=spec.dataset.img_size, in_chans=spec.dataset.in_chans,
                        **spec.model.arch)


def run(spec: ExperimentSpec, data: DatasetSplits, workdir: Path) -> tuple[FitResult, list[EpochReport]]:
    reports: list[EpochReport] = []
    result = fit(make_model(spec), data, spec, device=CPU, on_epoch=reports.append, workdir=workdir)
    return result, reports


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DatasetSplits:
    """256 training and 128 validation digits: for the mechanics, not the accuracy."""
    digits = load_dataset("digits", root=tmp_path_factory.mktemp("data"), img_size=IMG_SIZE, in_chans=1, seed=0)
    return DatasetSplits(digits.train.subset(range(256)), digits.val.subset(range(128)), digits.classes,
                         digits.mean, digits.std, digits.name)


class StepSpy:
    """Records every optimizer step: the optimizer's class, its first group's lr and the keywords it ran with."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type[torch.optim.Optimizer]) -> None:
        self.steps: list[dict[str, Any]] = []
        real = cls.step

        def step(opt: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
            self.steps.append({"cls": type(opt), **opt.param_groups[0], "groups": [
                {k: v for k, v in g.items() if k != "params"} | {"n": sum(p.numel() for p in g["params"])}
                for g in opt.param_groups]})
            return real(opt, *args, **kwargs)

        monkeypatch.setattr(cls, "step", step)

    @property
    def lrs(self) -> list[float]:
        return [s["lr"] for s in self.steps]


# -- optimizers and schedulers by torch's names ------------------------------------------------------------


def test_sgd_nesterov_with_one_cycle_for_max_steps(small: DatasetSplits, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spy = StepSpy(monkeypatch, torch.optim.SGD)
    spec = make_spec(
        optimizer={"name": "SGD", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
        scheduler={"name": "OneCycleLR", "pct_start": 0.25, "anneal_strategy": "linear", "cycle_momentum": False},
        max_steps=10, epochs=50,
    )
    result, reports = run(spec, small, tmp_path)
    lr = spec.train.lr
    # Exactly max_steps steps (256 inputs in batches of 64: 4 per epoch, the third epoch cut to 2), all of SGD with
    # the block's keywords; matrices decayed, biases not.
    assert len(spy.steps) == 10 and len(reports) == 3
    assert result.final["inputs_seen"] == 4 * 64 + 4 * 64 + 2 * 64
    first = spy.steps[0]
    assert first["cls"] is torch.optim.SGD and first["nesterov"] is True and first["momentum"] == 0.9
    decays = sorted((g["weight_decay"], g["n"]) for g in first["groups"])
    assert [d for d, _ in decays] == [0.0, 1e-4]
    # OneCycleLR over the 10 steps, linear: lr/25 up to the peak at 25% of the run, then a straight line to
    # lr/25/1e4 at the last step (no "stepped too often" error: its total_steps is the budget's).
    lrs = spy.lrs
    assert lrs[0] == pytest.approx(lr / 25)
    assert lrs[-1] == pytest.approx(lr / 25 / 1e4)
    peak = lrs.index(max(lrs))
    assert peak == 2 and max(lrs) < lr  # the phase ends at step 1.5: step 2 is just past the peak
    falls = [a - b for a, b in pairwise(lrs[peak:])]
    assert all(f > 0 for f in falls) and max(falls) == pytest.approx(min(falls))  # linear annealing
    state = torch.load(tmp_path / "last.pt", weights_only=True)["scheduler"]
    assert state["total_steps"] == 10 and state["last_epoch"] == 10


def test_exponential_lr_steps_once_per_epoch(small: DatasetSplits, tmp_path: Path) -> None:
    spec = make_spec(optimizer={"name": "AdamW", "betas": [0.9, 0.99]},
                     scheduler={"name": "ExponentialLR", "gamma": 0.5}, epochs=3)
    result, _ = run(spec, small, tmp_path)
    lr = spec.train.lr
    assert [h["lr"] for h in result.history] == pytest.approx([lr, lr / 2, lr / 4])


def test_reduce_on_plateau_watches_its_metric(small: DatasetSplits, tmp_path: Path) -> None:
    # An improvement must beat the best by 10 (never happens for an accuracy): after the first epoch every epoch
    # counts as a plateau, and with patience 0 the lr halves each time.
    spec = make_spec(scheduler={"name": "ReduceLROnPlateau", "monitor": "train_acc", "factor": 0.5, "patience": 0,
                                "threshold": 10, "threshold_mode": "abs"}, epochs=4)
    result, _ = run(spec, small, tmp_path)
    lr = spec.train.lr
    assert [h["lr"] for h in result.history] == pytest.approx([lr, lr, lr / 2, lr / 4])
    resumed = torch.load(tmp_path / "last.pt", weights_only=True)["scheduler"]
    assert resumed["mode"] == "max" and resumed["num_bad_epochs"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", [{"name": "OneCycleLR", "anneal_strategy": "linear"},
                                       {"name": "ExponentialLR", "gamma": 0.5}])
def test_a_torch_schedule_resumes_where_it_stopped(small: DatasetSplits, tmp_path: Path,
                                                   scheduler: dict[str, Any]) -> None:
    spec = make_spec(optimizer={"name": "AdamW", "betas": [0.9, 0.99]}, scheduler=scheduler, max_steps=10)
    whole, _ = run(spec, small, tmp_path / "whole")
    reports: list[EpochReport] = []
    with pytest.raises(TrialStopped):
        fit(make_model(spec), small, spec, device=CPU, on_epoch=reports.append, workdir=tmp_path / "cut",
            stop=lambda: len(reports) == 1)
    resumed = fit(make_model(spec), small, spec, device=CPU, on_epoch=reports.append, workdir=tmp_path / "cut",
                  resume=tmp_path / "cut" / "last.pt")
    timing = {"epoch_seconds", "images_per_second", "data_wait"}
    assert [{k: v for k, v in h.items() if k not in timing} for h in resumed.history] == [
        {k: v for k, v in h.items() if k not in timing} for h in whole.history]


# -- weight decay defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        ({"optimizer": "adam"}, [(0.0, 12), (0.0, 16)]),  # torch's Adam default: no L2 unless asked for
        ({"optimizer": "adamw"}, [(0.0, 12), (0.01, 16)]),  # torch's AdamW default
        ({"optimizer": "sgd"}, [(0.0, 12), (0.0, 16)]),
        ({"optimizer": {"name": "AdamW"}}, [(0.0, 12), (0.01, 16)]),
        ({"optimizer": {"name": "AdamW", "weight_decay": 0.05}}, [(0.0, 12), (0.05, 16)]),
        ({"optimizer": {"name": "AdamW"}, "weight_decay": 0.2}, [(0.0, 12), (0.2, 16)]),
        ({"optimizer": "adamw", "decay_norm_and_bias": True}, [(0.01, 28)]),  # norms and biases decayed too
    ],
)
def test_weight_decay_defaults_follow_torch(train: dict[str, Any], expected: list[tuple[float, int]]) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))  # 16 weights; 4 + 4 + 4 biases and norm scales
    opt = build_optimizer(model, TrainSpec(**train))
    assert sorted((g["weight_decay"], sum(p.numel() for p in g["params"])) for g in opt.param_groups) == expected
    if isinstance(train["optimizer"], str) and len(train) == 1:  # a spec that sets weight_decay keeps it
        kept = build_optimizer(model, TrainSpec(**train, weight_decay=0.05))
        assert sorted(g["weight_decay"] for g in kept.param_groups) == [0.0, 0.05]


def test_max_steps_budget() -> None:
    b = Budget(n_train=100, batch_size=32, max_epochs=1, max_steps=10)  # 4 steps per epoch (32, 32, 32, 4)
    assert b.steps_per_epoch == 4 and b.epochs == 3
    assert [b.inputs(e) for e in range(1, 4)] == [100, 100, 64]  # the last epoch: 2 whole batches
    assert b.total_steps == 10
    merged = Budget(n_train=97, batch_size=32, max_epochs=1, max_steps=7)  # 3 steps per epoch (32, 32, 33)
    assert [merged.inputs(e) for e in range(1, merged.epochs + 1)] == [97, 97, 32] and merged.total_steps == 7
    assert Budget(n_train=100, batch_size=32, max_epochs=9, max_steps=2).epochs == 1
    with pytest.raises(ValueError, match="not both"):
        Budget(n_train=100, batch_size=32, max_epochs=1, max_inputs=5, max_steps=5)


# -- normalisation and splits, through the worker's data path ----------------------------------------------


def _inputs(spec: ExperimentSpec, root: Path) -> tuple[DatasetSplits, torch.Tensor, torch.Tensor]:
    """The spec's data as the worker loads it, and its training images before and after normalisation."""
    data = DataCache().get(spec, root, download=False)
    images = data.train.to_tensors().images
    return data, images, Preprocess(data.mean, data.std).eval(images)


@pytest.mark.parametrize("in_chans", [1, 3])
def test_normalize_variants_change_the_inputs_as_stated(tmp_path: Path, in_chans: int) -> None:
    base = {"in_chans": in_chans}
    _, images, own = _inputs(make_spec(base), tmp_path)
    x = images.float() / 255
    assert own.mean().item() == pytest.approx(0.0, abs=0.02) and own.std().item() == pytest.approx(1.0, abs=0.02)

    _, _, none = _inputs(make_spec({**base, "normalize": "none"}), tmp_path)
    torch.testing.assert_close(none, x)  # x / 255

    _, _, half = _inputs(make_spec({**base, "normalize": {"mean": [0.5], "std": [0.5]}}), tmp_path)
    torch.testing.assert_close(half, x * 2 - 1)  # Perceiver's x*2-1
    assert half.min().item() == -1.0 and half.max().item() == 1.0

    if in_chans == 3:
        _, _, imagenet = _inputs(make_spec({**base, "normalize": "imagenet"}), tmp_path)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(imagenet, (x - mean) / std)
        cifar, _, _ = _inputs(make_spec({**base, "normalize": "cifar10"}), tmp_path)
        assert cifar.mean == (0.4914, 0.4822, 0.4465) and cifar.std == (0.2470, 0.2435, 0.2616)


@pytest.mark.slow
def test_val_fraction_zero_trains_on_everything_and_reports_train_metrics(tmp_path: Path) -> None:
    spec = make_spec({"val_fraction": 0}, epochs=2, svc_probe=True, plots=True)
    assert spec.metric == "train_acc"
    data = DataCache().get(spec, tmp_path / "data", download=False)
    assert len(data.train) == 1797 and len(data.val) == 0  # all of scikit-learn's digits, none held out
    result, reports = run(spec, data, tmp_path / "run")
    assert [r.epoch for r in reports] == [1, 2]
    for report in reports:
        assert {"train_loss", "train_acc", "lr"} <= report.metrics.keys()
        assert not any(k.startswith("val_") for k in report.metrics)
    assert result.final["inputs_seen"] == 2 * 1797
    assert result.history[-1]["train_acc"] > result.history[0]["train_acc"]
    assert "svc_acc" not in result.summary and math.isnan(result.summary["best_val_acc"])
    assert [p.name for p in result.artifacts] == ["curves.png"]
    assert "last" in result.checkpoints
    assert evaluate(make_model(spec), data, spec, CPU) == {}


def test_fused_kernels_only_where_torch_has_them_on_a_gpu() -> None:
    model = nn.Linear(4, 4)
    cuda = torch.device("cuda")  # only read to choose the kernels: nothing is moved there
    assert build_optimizer(model, TrainSpec(optimizer={"name": "AdamW"}), cuda).defaults["fused"] is True
    assert build_optimizer(model, TrainSpec(optimizer={"name": "SGD", "momentum": 0.9}), cuda).defaults["fused"] is True
    adagrad = build_optimizer(model, TrainSpec(optimizer={"name": "Adagrad"}), cuda)  # its fused kernel is CPU-only
    assert isinstance(adagrad, torch.optim.Adagrad) and not adagrad.defaults.get("fused")
