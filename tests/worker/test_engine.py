"""End-to-end tests of ``worker.engine.fit`` on the real digits data and real models, on the CPU."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

import vitmodels
from server.core.models import StopReason
from server.core.spec import ExperimentSpec
from tests.vitmodels.test_models import small as small_arch
from worker.data import DatasetSplits, ImageSet, TensorImageSet, load_dataset
from worker.engine import EpochReport, FitResult, evaluate, fit, load_checkpoint
from worker.exceptions import TrialPruned, TrialStopped

CPU = torch.device("cpu")
IMG_SIZE = 16
TINY_VIT = {"patch_size": 4, "num_layers": 2, "num_heads": 4, "hidden_dim": 64, "mlp_dim": 128}
SMALL_CNN = {"width": 16, "depth": 2, "hidden_dim": 64}
TIMING_KEYS = {"epoch_seconds", "images_per_second", "data_wait"}
EPOCH_KEYS = {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "images_per_second", "data_wait",
              "inputs_seen"}
SUMMARY_KEYS = {"param_count", "flops_per_image", "peak_memory_bytes", "svc_acc", "best_val_acc", "best_epoch",
                "final_train_acc", "final_val_loss", "seconds_per_epoch", "median_images_per_second", "inputs_seen"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- helpers ------------------------------------------------------------------------------------------------


def make_spec(model: str = "cnn", arch: dict[str, Any] | None = None, augment: Any = "none", **train: Any) -> ExperimentSpec:
    """A resolved single-trial spec on 16x16 gray digits; ``train`` overrides quick defaults."""
    train = {"epochs": 1, "batch_size": 64, "lr": 2e-3, "num_workers": 0, "svc_probe": False, "plots": False, **train}
    if arch is None:
        arch = dict(SMALL_CNN if model == "cnn" else TINY_VIT)
    spec = ExperimentSpec(
        name="engine-test",
        dataset={"name": "digits", "img_size": IMG_SIZE, "in_chans": 1, "augment": augment},
        model={"name": model, "arch": arch},
        train=train,
        matrix={"_": [0]},
    )
    return spec.resolve({})


def make_model(spec: ExperimentSpec, seed: int = 0) -> nn.Module:
    from vitmodels import create_model

    torch.manual_seed(seed)
    return create_model(spec.model.name, num_classes=10, img_size=spec.dataset.img_size,
                        in_chans=spec.dataset.in_chans, code_size=spec.model.code_size, **spec.model.arch)


def run(spec: ExperimentSpec, data: DatasetSplits, workdir: Path, model: nn.Module | None = None,
        **kwargs: Any) -> tuple[FitResult, list[EpochReport]]:
    reports: list[EpochReport] = []
    result = fit(model if model is not None else make_model(spec), data, spec, device=CPU,
                 on_epoch=reports.append, workdir=workdir, **kwargs)
    return result, reports


def comparable(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """History without wall-clock figures, which differ between identical runs."""
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert min(img.size) >= 100, (path, img.size)


class FileLikeSet(ImageSet):
    """An in-memory set that says it is not, to drive the DataLoader path."""

    in_memory = False

    def __init__(self, inner: TensorImageSet) -> None:
        self.inner = inner
        self.labels = inner.labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inner[index]

    def subset(self, indices: Any) -> FileLikeSet:
        return FileLikeSet(self.inner.subset(indices))


class CountingModel(nn.Module):
    """Wraps a model and records the size of every training-mode batch it sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches.append(len(x))
        return self.inner(x)


# -- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DatasetSplits:
    return load_dataset("digits", root=tmp_path_factory.mktemp("data"), img_size=IMG_SIZE, in_chans=1, seed=0)


@pytest.fixture(scope="module")
def small(digits: DatasetSplits) -> DatasetSplits:
    """256 training and 128 validation digits: for the mechanics, not the accuracy."""
    return DatasetSplits(digits.train.subset(range(256)), digits.val.subset(range(128)), digits.classes,
                         digits.mean, digits.std, digits.name)


@dataclass
class VitRun:
    spec: ExperimentSpec
    result: FitResult
    reports: list[EpochReport]
    workdir: Path


@pytest.fixture(scope="module")
def vit_run(digits: DatasetSplits, tmp_path_factory: pytest.TempPathFactory) -> VitRun:
    spec = make_spec("vit", epochs=6, batch_size=32, lr=2e-3, warmup_epochs=0.5, svc_probe=True, plots=True)
    workdir = tmp_path_factory.mktemp("vit")
    result, reports = run(spec, digits, workdir)
    return VitRun(spec, result, reports, workdir)


# -- every registered model through fit ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgb32(tmp_path_factory: pytest.TempPathFactory) -> DatasetSplits:
    """64 + 32 generated RGB images of 32x32 in 4 classes: the shape every family builds at."""
    return load_dataset("synthetic", root=tmp_path_factory.mktemp("rgb"), img_size=32, in_chans=3, seed=0,
                        num_samples=96, num_classes=4)


@pytest.mark.parametrize("name", vitmodels.list_models())
def test_every_model_fits_to_its_summary(name: str, rgb32: DatasetSplits, tmp_path: Path) -> None:
    """Two training steps of every registered family and named config, through the real ``fit`` to the end of
    the trial: the summary (parameter and FLOP counts, the SVC probe) and the best checkpoint, where perceiver
    models once failed after all their epochs."""
    img_size, arch = small_arch(name)
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}  # as a spec (JSON) holds them
    spec = ExperimentSpec(
        name="every-model",
        dataset={"name": "synthetic", "img_size": img_size, "in_chans": 3},
        model={"name": name, "arch": arch},
        train={"epochs": 1, "max_steps": 2, "batch_size": 16, "lr": 1e-3, "num_workers": 0, "svc_probe": True,
               "plots": False},
    ).resolve({})
    result, reports = run(spec, rgb32, tmp_path, model=vitmodels.create_model(name, num_classes=4, img_size=img_size,
                                                                                **arch))
    assert [r.epoch for r in reports] == [1]
    summary = result.summary
    assert summary["param_count"] > 0 and summary["flops_per_image"] > 0, summary
    assert 0.0 <= summary["svc_acc"] <= 1.0, summary
    assert "best" in result.checkpoints and math.isfinite(result.final["train_loss"])


# -- real learning ------------------------------------------------------------------------------------------


def test_vit_learns_digits(vit_run: VitRun) -> None:
    result = vit_run.result
    assert result.final["val_acc"] >= 0.90, result.history
    assert result.best_val_acc >= result.final["val_acc"]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_cnn_learns_digits(digits: DatasetSplits, tmp_path: Path) -> None:
    spec = make_spec("cnn", arch={}, epochs=3, batch_size=32, lr=3e-3)
    result, _ = run(spec, digits, tmp_path)
    assert result.final["val_acc"] >= 0.90, result.history
    assert result.artifacts == [] and not (tmp_path / "plots").exists()  # plots switched off
    assert "svc_acc" not in result.summary  # probe switched off


def test_l2_loss_learns(digits: DatasetSplits, tmp_path: Path) -> None:
    spec = make_spec("cnn", epochs=2, batch_size=32, lr=3e-3, loss="l2")
    result, _ = run(spec, digits, tmp_path)
    assert result.final["val_acc"] > 0.5, result.history  # chance is 0.1
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


# -- reports, summary, plots, checkpoints -------------------------------------------------------------------


def test_reports_and_history(vit_run: VitRun) -> None:
    result, reports = vit_run.result, vit_run.reports
    assert [r.epoch for r in reports] == list(range(1, 7))
    assert [h["epoch"] for h in result.history] == list(range(1, 7))
    for report, entry in zip(reports, result.history, strict=True):
        assert set(report.metrics) == EPOCH_KEYS
        assert {k: entry[k] for k in EPOCH_KEYS} == report.metrics
        assert report.checkpoint == vit_run.workdir / "last.pt"
        assert all(math.isfinite(v) for v in report.metrics.values())
        assert 0 <= report.metrics["train_acc"] <= 1 and 0 <= report.metrics["val_acc"] <= 1
    assert [h["inputs_seen"] for h in result.history] == [1438 * e for e in range(1, 7)]
    assert result.final == result.history[-1]
    assert result.best_epoch == max(result.history, key=lambda h: h["val_acc"])["epoch"]


def test_summary(vit_run: VitRun) -> None:
    s, result = vit_run.result.summary, vit_run.result
    assert SUMMARY_KEYS <= set(s), SUMMARY_KEYS - set(s)
    assert "mfu" not in s  # GPU only
    model = make_model(vit_run.spec)
    assert s["param_count"] == sum(p.numel() for p in model.parameters())
    # Patch embedding alone is 16 patches x (16 -> 64) multiply-adds: a lower bound on the forward FLOPs.
    assert 2 * 16 * 16 * 64 < s["flops_per_image"] < 1e8
    assert 50e6 < s["peak_memory_bytes"] < 64e9
    assert 0.8 <= s["svc_acc"] <= 1.0
    assert s["best_val_acc"] == result.best_val_acc and s["best_epoch"] == result.best_epoch
    assert s["final_train_acc"] == result.final["train_acc"]
    assert s["final_val_loss"] == result.final["val_loss"]
    assert s["seconds_per_epoch"] > 0 and s["median_images_per_second"] > 0
    assert s["inputs_seen"] == 6 * 1438


def test_plots_are_pngs(vit_run: VitRun) -> None:
    plots = vit_run.workdir / "plots"
    names = {"curves.png", "confusion_matrix.png", "misclassified.png"}
    assert {p.name for p in vit_run.result.artifacts} == names
    for path in vit_run.result.artifacts:
        assert path.parent == plots
        assert_png(path)


def test_checkpoints_reload_to_the_same_metrics(vit_run: VitRun, digits: DatasetSplits) -> None:
    result, spec = vit_run.result, vit_run.spec
    assert result.checkpoints == {"best": vit_run.workdir / "best.pt", "last": vit_run.workdir / "last.pt"}
    model = make_model(spec, seed=123)  # different initial weights: everything must come from the file
    saved = load_checkpoint(result.checkpoints["last"], model)
    assert saved["epoch"] == 6 and saved["history"] == result.history
    metrics = evaluate(model, digits, spec, CPU)
    assert metrics["val_acc"] == result.final["val_acc"]
    assert metrics["val_loss"] == pytest.approx(result.final["val_loss"], rel=1e-6)
    saved = load_checkpoint(result.checkpoints["best"], model)
    assert saved["epoch"] == result.best_epoch
    assert evaluate(model, digits, spec, CPU)["val_acc"] == result.best_val_acc
    # The result's model (what MLflow logs) is a copy with the best epoch's weights.
    assert result.model is not None
    assert all(torch.equal(v, saved["model"][k]) for k, v in result.model.state_dict().items())


def test_svc_probe_every_n_epochs(small: DatasetSplits, tmp_path: Path) -> None:
    """svc_probe: {every: 2}: svc_acc in epoch 2's and 4's metrics only (the probe is not in epoch_seconds), and
    the end-of-trial figure is the last epoch's probe, not a second fit."""
    spec = make_spec("cnn", epochs=4, batch_size=64, lr=3e-3, svc_probe={"every": 2, "samples": 64})
    result, reports = run(spec, small, tmp_path)
    probed = {r.epoch: r.metrics["svc_acc"] for r in reports if "svc_acc" in r.metrics}
    assert sorted(probed) == [2, 4] and all(0.0 <= v <= 1.0 for v in probed.values()), probed
    assert [h.get("svc_acc") for h in result.history] == [None, probed[2], None, probed[4]]
    assert result.summary["svc_acc"] == probed[4]


def test_svc_probe_sample_size(small: DatasetSplits) -> None:
    """The SVC is fit on exactly ``samples`` training images (all 256 where it asks for more), scored on the
    whole 128-image validation split."""
    from worker.engine.loader import Preprocess, make_batches
    from worker.engine.precision import resolve_precision
    from worker.engine.probe import svc_probe

    model = make_model(make_spec("cnn"))
    train, val = (make_batches(s, batch_size=64, device=CPU) for s in (small.train, small.val))
    prep, precision = Preprocess(small.mean, small.std), resolve_precision("fp32", CPU)
    try:
        scores = {n: svc_probe(model, train, val, prep, precision, seed=0, max_train=n) for n in (40, 100, 10_000)}
    finally:
        train.close()
        val.close()
    assert {n: (s.fitted, s.scored) for n, s in scores.items() if s is not None} == {
        40: (40, 128), 100: (100, 128), 10_000: (256, 128)}


def test_stn_plot(small: DatasetSplits, tmp_path: Path) -> None:
    spec = make_spec("vit_stn", max_inputs=64, plots=True)
    result, _ = run(spec, small, tmp_path)
    assert "stn.png" in {p.name for p in result.artifacts}
    assert_png(tmp_path / "plots" / "stn.png")


# -- budget, optimisers, schedules, precision ---------------------------------------------------------------


@pytest.mark.parametrize("max_inputs", [100, 256 + 65, 3 * 256])
def test_max_inputs_is_exact(small: DatasetSplits, tmp_path: Path, max_inputs: int) -> None:
    spec = make_spec(max_inputs=max_inputs, epochs=50)
    model = CountingModel(make_model(spec))
    result, reports = run(spec, small, tmp_path, model=model)
    assert sum(model.batches) == max_inputs
    assert 1 not in model.batches  # a trailing single sample joins the batch before it
    assert len(reports) == math.ceil(max_inputs / 256)  # the partial last epoch still reports
    assert result.final["inputs_seen"] == result.summary["inputs_seen"] == max_inputs
    scheduler = torch.load(tmp_path / "last.pt", weights_only=True)["scheduler"]
    assert scheduler["last_epoch"] == len(model.batches)  # the schedule spans exactly the steps taken


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "extra"),
    [
        ("adam", "constant", {}),
        ("adamw", "cosine", {"warmup_epochs": 1}),
        ("sgd", "onecycle", {"lr": 0.05}),
        ("sgd", "step", {"lr": 0.05, "nesterov": True, "step_size": 1, "gamma": 0.5}),
    ],
)
def test_optimizers_and_schedules(small: DatasetSplits, tmp_path: Path, optimizer: str, scheduler: str,
                                  extra: dict[str, Any]) -> None:
    spec = make_spec(epochs=3, optimizer=optimizer, scheduler=scheduler, **extra)
    result, _ = run(spec, small, tmp_path)
    lr, lrs = spec.train.lr, [h["lr"] for h in result.history]
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    if scheduler == "constant":
        assert lrs == [pytest.approx(lr)] * 3
    elif scheduler == "cosine":
        assert lrs[0] == pytest.approx(lr)  # warm-up done after one epoch
        assert lrs[0] > lrs[1] > lrs[2] and lrs[2] < lr * 1e-3
    elif scheduler == "onecycle":
        assert max(lrs) <= lr and lrs[-1] < lr / 1000
    else:
        assert lrs == [pytest.approx(lr * 0.5**e) for e in (1, 2, 3)]


@pytest.mark.parametrize("precision", ["fp16", "bf16", "auto"])
def test_precisions_run_on_cpu(small: DatasetSplits, tmp_path: Path, precision: str) -> None:
    spec = make_spec("vit", epochs=1, precision=precision)
    result, _ = run(spec, small, tmp_path)
    assert all(math.isfinite(v) for v in result.final.values())


def test_grad_clip(small: DatasetSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    before: list[float] = []  # the gradient norm torch saw, before clipping
    after: list[float] = []  # the norm of the gradients the optimizer then stepped with
    real = torch.nn.utils.clip_grad_norm_

    def spy(params: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        params = list(params)
        calls.append(max_norm)
        norm = real(params, max_norm, *args, **kwargs)
        before.append(float(norm))
        after.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    spec = make_spec(epochs=1, grad_clip=0.25)
    result, _ = run(spec, small, tmp_path)
    assert calls == [0.25] * 4  # 256 inputs in batches of 64
    assert max(before) > 0.25  # there was something to clip ...
    assert all(a <= 0.25 * (1 + 1e-4) for a in after), after  # ... and every step used clipped gradients
    assert math.isfinite(result.final["train_loss"])


# -- data paths and determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_path_matches_device_path(small: DatasetSplits, tmp_path: Path, num_workers: int) -> None:
    spec = make_spec(epochs=2, augment="standard", num_workers=num_workers)
    reference, _ = run(spec, small, tmp_path / "memory")
    files = DatasetSplits(FileLikeSet(small.train), FileLikeSet(small.val), small.classes, small.mean, small.std,
                         small.name)
    loaded, _ = run(spec, files, tmp_path / "loader")
    assert comparable(loaded.history) == comparable(reference.history)


def test_resume_continues_the_history(small: DatasetSplits, tmp_path: Path) -> None:
    arch = {**TINY_VIT, "dropout": 0.1}  # draws from the global RNG, which must be restored too
    spec = make_spec("vit", arch=arch, augment="standard", epochs=3, batch_size=32)
    whole, _ = run(spec, small, tmp_path / "whole")

    def stop_after_two() -> bool:
        return len(reports) == 2

    reports: list[EpochReport] = []
    with pytest.raises(TrialStopped):
        fit(make_model(spec), small, spec, device=CPU, on_epoch=reports.append, workdir=tmp_path / "cut",
            stop=stop_after_two)
    assert comparable([{"epoch": r.epoch, **r.metrics} for r in reports]) == comparable(whole.history[:2])

    resumed_reports: list[EpochReport] = []
    resumed = fit(make_model(spec, seed=99), small, spec, device=CPU, on_epoch=resumed_reports.append,
                  workdir=tmp_path / "cut", resume=tmp_path / "cut" / "last.pt")
    assert [r.epoch for r in resumed_reports] == [3]
    assert comparable(resumed.history) == comparable(whole.history)
    assert resumed.best_epoch == whole.best_epoch and resumed.best_val_acc == whole.best_val_acc


KORNIA_PIPELINE = {"ops": [{"RandomCrop": {"size": [IMG_SIZE, IMG_SIZE], "padding": 2}},
                           {"RandomAffine": {"degrees": 15.0, "p": 0.5}}, {"RandomErasing": {"p": 0.5}},
                           {"RandomMixUpV2": {}}],
                   "random_apply": [1, 2]}


def test_a_kornia_pipeline_with_mixup_trains_and_resumes_identically(small: DatasetSplits, tmp_path: Path) -> None:
    """A spec's own kornia pipeline (random_apply, then MixUp: soft targets) through the real fit: the same seed
    gives the same run, and a run stopped after two epochs resumes to the same history."""
    spec = make_spec("vit", arch={**TINY_VIT, "dropout": 0.1}, augment=KORNIA_PIPELINE, epochs=3, batch_size=32)
    whole, _ = run(spec, small, tmp_path / "whole")
    assert all(math.isfinite(h["train_loss"]) and 0 <= h["train_acc"] <= 1 for h in whole.history)
    again, _ = run(spec, small, tmp_path / "again")
    assert comparable(again.history) == comparable(whole.history)
    plain, _ = run(make_spec("vit", arch={**TINY_VIT, "dropout": 0.1}, epochs=3, batch_size=32), small,
                   tmp_path / "plain")
    assert comparable(plain.history) != comparable(whole.history), "the pipeline changes the training inputs"

    reports: list[EpochReport] = []
    with pytest.raises(TrialStopped):
        fit(make_model(spec), small, spec, device=CPU, on_epoch=reports.append, workdir=tmp_path / "cut",
            stop=lambda: len(reports) == 2)
    resumed = fit(make_model(spec, seed=99), small, spec, device=CPU, on_epoch=reports.append,
                  workdir=tmp_path / "cut", resume=tmp_path / "cut" / "last.pt")
    assert comparable(resumed.history) == comparable(whole.history)


def test_stop_writes_a_checkpoint_even_between_due_epochs(small: DatasetSplits, tmp_path: Path) -> None:
    spec = make_spec(epochs=4, checkpoint_every=3)
    with pytest.raises(TrialStopped, match="stop requested"):
        run(spec, small, tmp_path, stop=lambda: True)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


# -- pruning ------------------------------------------------------------------------------------------------


def test_pruning_from_on_epoch_propagates_after_the_checkpoint(small: DatasetSplits, tmp_path: Path) -> None:
    spec = make_spec(epochs=3)
    seen: list[EpochReport] = []

    def on_epoch(report: EpochReport) -> None:
        seen.append(report)
        assert report.checkpoint is not None and report.checkpoint.exists()
        if report.epoch == 2:
            raise TrialPruned(report.epoch)

    with pytest.raises(TrialPruned) as info:
        fit(make_model(spec), small, spec, device=CPU, on_epoch=on_epoch, workdir=tmp_path)
    assert info.value.epoch == 2 and len(seen) == 2
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert (tmp_path / "best.pt").exists()


def test_nan_loss_prunes(small: DatasetSplits, tmp_path: Path) -> None:
    spec = make_spec(epochs=2)
    model = make_model(spec)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    reports: list[EpochReport] = []
    with pytest.raises(TrialPruned) as info:
        fit(model, small, spec, device=CPU, on_epoch=reports.append, workdir=tmp_path)
    assert info.value.epoch == 1 and info.value.reason == "nan loss"
    assert reports == [] and not (tmp_path / "last.pt").exists()


def test_stop_raised_by_on_epoch_still_saves_the_epoch(small: DatasetSplits, tmp_path: Path) -> None:
    spec = make_spec(epochs=4, checkpoint_every=3)

    def on_epoch(report: EpochReport) -> None:
        assert report.checkpoint is None  # not due at epoch 1
        raise TrialStopped(StopReason.cancelled)

    with pytest.raises(TrialStopped, match="cancelled"):
        fit(make_model(spec), small, spec, device=CPU, on_epoch=on_epoch, workdir=tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_a_lost_lease_writes_no_checkpoint(small: DatasetSplits, tmp_path: Path) -> None:
    """Once the guard says the lease is lost, fit writes nothing more: not the epoch's best.pt or last.pt, nor the
    last.pt a stop between due checkpoints would write."""
    spec = make_spec(epochs=4, checkpoint_every=3)
    lost = False

    def guard() -> None:
        if lost:
            raise TrialStopped(StopReason.lease_lost)

    def on_epoch(report: EpochReport) -> None:
        nonlocal lost
        lost = True  # the store says, at epoch 1, that another worker took the trial

    with pytest.raises(TrialStopped, match="lease lost"):
        fit(make_model(spec), small, spec, device=CPU, on_epoch=on_epoch, workdir=tmp_path, guard=guard)
    assert not (tmp_path / "last.pt").exists()
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 1


# -- the fast path's switches (train.data_on_device, fused_optimizer, fused_attention, compile) -------------


def test_data_on_device_false_feeds_in_memory_sets_through_a_dataloader(
    small: DatasetSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.engine.loader import LoaderBatches

    reference, _ = run(make_spec(epochs=2, augment="standard"), small, tmp_path / "device")
    built: list[LoaderBatches] = []
    real = LoaderBatches.__init__

    def spy(self: LoaderBatches, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(LoaderBatches, "__init__", spy)
    loaded, _ = run(make_spec(epochs=2, augment="standard", data_on_device=False), small, tmp_path / "loader")
    assert len(built) == 2  # the training and the validation source
    assert comparable(loaded.history) == comparable(reference.history)  # same batches, same augmentation draws
    assert all(0 <= h["data_wait"] < 1 for h in loaded.history + reference.history)


def test_fused_optimizer(small: DatasetSplits, tmp_path: Path) -> None:
    from worker.engine.optim import build_optimizer

    model = make_model(make_spec())
    assert build_optimizer(model, make_spec(fused_optimizer=True).train).defaults["fused"] is True
    assert not build_optimizer(model, make_spec().train).defaults["fused"]  # auto: fused on a GPU only
    assert not build_optimizer(model, make_spec(fused_optimizer=False).train, torch.device("cuda")).defaults["fused"]
    assert build_optimizer(model, make_spec().train, torch.device("cuda")).defaults["fused"] is True
    reference, _ = run(make_spec(epochs=2), small, tmp_path / "foreach")
    fused, _ = run(make_spec(epochs=2, fused_optimizer=True), small, tmp_path / "fused")
    for a, b in zip(comparable(reference.history), comparable(fused.history), strict=True):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-4)


def test_unfused_attention_runs_the_math_kernel(small: DatasetSplits, tmp_path: Path) -> None:
    flags: list[tuple[bool, bool, bool]] = []

    def record(*_: Any) -> None:
        b = torch.backends.cuda
        flags.append((b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled()))

    spec = make_spec("vit", epochs=1, fused_attention=False)
    model = make_model(spec)
    model.register_forward_pre_hook(record)
    result, _ = run(spec, small, tmp_path / "math", model=model)
    assert flags and set(flags) == {(False, False, True)}
    assert torch.backends.cuda.flash_sdp_enabled()  # restored after the trial
    reference, _ = run(make_spec("vit", epochs=1), small, tmp_path / "fused")
    assert result.final["train_loss"] == pytest.approx(reference.final["train_loss"], rel=1e-3)


@pytest.mark.slow
def test_compiled_trial_matches_eager_and_the_next_trial_reuses_the_cache(
    small: DatasetSplits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager, _ = run(make_spec(epochs=1), small, tmp_path / "eager")
    spec = make_spec(epochs=1, compile=True)
    torch._dynamo.reset()
    counters.clear()
    first, _ = run(spec, small, tmp_path / "first")
    assert counters["inductor"]["fxgraph_cache_miss"] >= 1  # compiled and stored
    torch._dynamo.reset()  # the next trial of the slot: a new model object, nothing in memory
    counters.clear()
    second, _ = run(spec, small, tmp_path / "second")
    assert counters["inductor"]["fxgraph_cache_hit"] >= 1 and counters["inductor"]["fxgraph_cache_miss"] == 0
    assert any((tmp_path / "inductor").iterdir())
    for a, b in zip(comparable(eager.history), comparable(first.history), strict=True):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-4)
    for a, b in zip(comparable(first.history), comparable(second.history), strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
