"""Unit tests of the engine's parts: schedules, losses, budget, batching, precision, figures, statistics."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from server.core.spec import TrainSpec
from worker.data import TensorImageSet
from worker.engine import plots, stats
from worker.engine.budget import Budget, steps_for
from worker.engine.loader import DeviceBatches, LoaderBatches, batch_order, is_in_memory
from worker.engine.losses import build_loss, l2_loss
from worker.engine.optim import build_optimizer, build_scheduler, lr_factor
from worker.engine.precision import resolve_precision

CPU = torch.device("cpu")


def factors(train: TrainSpec, steps_per_epoch: int, total: int) -> list[float]:
    fn = lr_factor(train, steps_per_epoch=steps_per_epoch, total_steps=total)
    return [fn(s) for s in range(total + 1)]


# -- schedules ----------------------------------------------------------------------------------------------


def test_constant_with_warmup() -> None:
    f = factors(TrainSpec(scheduler="constant", warmup_epochs=0.5), steps_per_epoch=10, total=30)
    assert f[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert set(f[5:]) == {1.0}


def test_cosine_decays_to_zero_after_warmup() -> None:
    f = factors(TrainSpec(scheduler="cosine", warmup_epochs=1), steps_per_epoch=10, total=50)
    assert f[9] == 1.0 and f[10] == 1.0
    assert f[30] == pytest.approx(0.5)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[50] == pytest.approx(0.0, abs=1e-12)


def test_onecycle_rises_then_anneals() -> None:
    f = factors(TrainSpec(scheduler="onecycle"), steps_per_epoch=10, total=100)
    assert f[0] == pytest.approx(1 / 25)
    assert max(f) == f[30] == 1.0  # 30% of the steps rising by default
    assert f[100] == pytest.approx(1 / 25e4)
    short = factors(TrainSpec(scheduler="onecycle"), steps_per_epoch=1, total=1)  # degenerate run: no error
    assert all(math.isfinite(x) for x in short)


def test_step_decays_every_step_size_epochs() -> None:
    f = factors(TrainSpec(scheduler="step", step_size=2, gamma=0.1), steps_per_epoch=5, total=30)
    assert f[9] == 1.0 and f[10] == pytest.approx(0.1) and f[20] == pytest.approx(0.01)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers_decay_only_matrices(optimizer: str) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(model, TrainSpec(optimizer=optimizer, weight_decay=0.1, nesterov=optimizer == "sgd"))
    decays = sorted((g["weight_decay"], sum(p.numel() for p in g["params"])) for g in opt.param_groups)
    assert decays == [(0.0, 12), (0.1, 16)]
    sched = build_scheduler(opt, TrainSpec(optimizer=optimizer), steps_per_epoch=2, total_steps=4)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.after_step()
    assert opt.param_groups[0]["lr"] < TrainSpec().lr


def test_sgd_nesterov_needs_momentum() -> None:
    with pytest.raises(ValueError, match="momentum"):
        build_optimizer(nn.Linear(2, 2), TrainSpec(optimizer="sgd", nesterov=True, momentum=0.0))


# -- losses -------------------------------------------------------------------------------------------------


def test_l2_loss_is_mean_squared_distance_to_one_hot() -> None:
    outputs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    assert l2_loss(outputs, labels).item() == pytest.approx((0.0 + (0.25 + 0.25 + 1.0)) / 2)
    assert build_loss("l2")(outputs, labels).item() == pytest.approx(0.75)


def test_mse_loss_is_torchs_mean_over_every_element() -> None:
    outputs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    labels = torch.tensor([0, 2])
    assert build_loss("mse")(outputs, labels).item() == pytest.approx((0.25 + 0.25 + 1.0) / 6)
    target = nn.functional.one_hot(labels, 3).float()
    assert build_loss("mse")(outputs, labels).item() == pytest.approx(nn.MSELoss()(outputs, target).item())


def test_cross_entropy_label_smoothing() -> None:
    outputs, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    plain = nn.functional.cross_entropy(outputs, labels)
    assert build_loss("cross_entropy")(outputs, labels).item() == pytest.approx(plain.item())
    smoothed = nn.functional.cross_entropy(outputs, labels, label_smoothing=0.1)
    assert build_loss("cross_entropy", label_smoothing=0.1)(outputs, labels).item() == pytest.approx(smoothed.item())


# -- budget and batches -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "bs"), [(10, 3), (10, 5), (9, 4), (1, 4), (65, 64), (128, 64)])
def test_batch_order_visits_every_sample_once(n: int, bs: int) -> None:
    chunks = batch_order(torch.randperm(n), bs)
    assert sorted(torch.cat(chunks).tolist()) == list(range(n))
    assert len(chunks) == steps_for(n, bs)
    assert all(len(c) >= 2 for c in chunks) or n == 1


def test_budget_epochs_and_inputs() -> None:
    b = Budget(n_train=100, batch_size=32, max_epochs=3)
    assert b.epochs == 3 and [b.inputs(e) for e in (1, 2, 3)] == [100, 100, 100] and b.total_steps == 12
    m = Budget(n_train=100, batch_size=32, max_epochs=3, max_inputs=250)
    assert m.epochs == 3 and [m.inputs(e) for e in (1, 2, 3)] == [100, 100, 50]
    assert m.total_steps == 4 + 4 + 2
    assert Budget(n_train=100, batch_size=32, max_epochs=9, max_inputs=40).epochs == 1


def _set(n: int = 10) -> TensorImageSet:
    images = torch.arange(n * 4, dtype=torch.uint8).view(n, 1, 2, 2)
    return TensorImageSet(images, torch.arange(n) % 3)


def test_device_and_loader_sources_agree() -> None:
    data = _set()
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    device = DeviceBatches(data, batch_size=4, device=CPU)
    loader = LoaderBatches(data, batch_size=4, device=CPU, num_workers=0, seed=0)
    assert is_in_memory(data)
    for (xa, ya), (xb, yb) in zip(device.batches(order), loader.batches(order), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.dtype == torch.uint8
    sequential = torch.cat([x for x, _ in device.batches()])
    assert torch.equal(sequential, data.images)


# -- precision ----------------------------------------------------------------------------------------------


def test_auto_precision_is_fp32_on_cpu() -> None:
    p = resolve_precision("auto", CPU)
    assert p.name == "fp32" and p.dtype is None and not p.grad_scaler().is_enabled()
    assert resolve_precision("fp16", CPU).grad_scaler().is_enabled()
    assert resolve_precision("bf16", CPU).dtype is torch.bfloat16


# -- statistics ---------------------------------------------------------------------------------------------


def test_forward_flops_of_a_linear_layer() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert stats.forward_flops(model, (3, 2, 2), CPU) == 2 * 12 * 5
    assert stats.count_params(model) == 12 * 5 + 5


@pytest.mark.parametrize(("name", "arch"), [
    ("vit", {"num_layers": 2, "num_heads": 2, "hidden_dim": 64, "mlp_dim": 128}),  # even heads: MHA's fast path
    ("perceiver", {"depth": 1, "num_latents": 16, "latent_dim": 32}),  # parameters passed into submodules
    ("perceiver_io", {"depth": 1, "num_latents": 16, "latent_dim": 32, "queries_dim": 32}),
])
def test_forward_flops_counts_what_training_runs(name: str, arch: dict[str, int]) -> None:
    """The count is the one of a forward pass with autograd on, also where inference would take other paths."""
    from torch.utils.flop_counter import FlopCounterMode

    from vitmodels import create_model

    model = create_model(name, num_classes=4, img_size=16, **arch)
    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(torch.zeros(1, 3, 16, 16))
    assert stats.forward_flops(model, (3, 16, 16), CPU) == counter.get_total_flops() > 0
    with torch.no_grad():  # also when the caller has autograd off
        assert stats.forward_flops(model, (3, 16, 16), CPU) == counter.get_total_flops()


def test_no_mfu_without_a_known_gpu() -> None:
    assert stats.mfu(1e6, 1e3, CPU, "bf16") is None
    names = [fragment for fragment, _ in stats.PEAK_FLOPS]
    assert names.index("H100 PCIe") < names.index("H100") and names.index("A10G") < names.index("A10")


def test_cpu_peak_memory_is_the_trials_own() -> None:
    """Each PeakMemory starts from what the process holds now: a second measure after a first that allocated
    400 MB (freed since) is not the first's high-water mark."""
    first = stats.PeakMemory(CPU)
    big = torch.ones(100 * 2**20)  # 400 MB, touched
    del big
    first_peak = first.figures()["peak_memory_bytes"]
    first.close()
    second = stats.PeakMemory(CPU)
    small = torch.ones(2**20)  # 4 MB
    del small
    second_peak = second.figures()["peak_memory_bytes"]
    second.close()
    assert first_peak > second_peak + 300 * 2**20, (first_peak, second_peak)
    assert second_peak > 0 and "peak_memory_reserved_bytes" not in second.figures()  # GPU only


def test_sampled_peak_memory_where_the_kernel_cannot_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off Linux the resident set is sampled from a thread: it sees a 200 MB tensor held for a while."""
    import time

    monkeypatch.setattr(stats, "_reset_kernel_peak", lambda: False)  # the platform's answer, not torch's
    peak = stats.PeakMemory(CPU)
    start = peak.figures()["peak_memory_bytes"]
    held = torch.ones(50 * 2**20)
    time.sleep(10 * stats.PeakMemory.SAMPLE_SECONDS)
    del held
    during = peak.figures()["peak_memory_bytes"]
    peak.close()
    assert during > start + 150 * 2**20, (start, during)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_peak_memory_allocated_and_reserved() -> None:
    device = torch.device("cuda")
    held = torch.ones(64 * 2**20, device=device)  # 256 MB of an earlier trial, freed before this one starts
    del held
    peak = stats.PeakMemory(device)
    x = torch.ones(16 * 2**20, device=device)  # 64 MB
    figures = peak.figures()
    del x
    assert 64 * 2**20 <= figures["peak_memory_bytes"] < 128 * 2**20, figures
    assert figures["peak_memory_reserved_bytes"] >= figures["peak_memory_bytes"], figures


# -- figures ------------------------------------------------------------------------------------------------


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def test_confusion_matrix_for_many_classes(tmp_path: Path) -> None:
    labels = torch.arange(100).repeat(3)
    path = plots.plot_confusion_matrix(labels.roll(1), labels, [f"c{i}" for i in range(100)], tmp_path / "cm.png")
    assert min(_png(path)) > 300


def test_misclassified_grid_edge_cases(tmp_path: Path) -> None:
    empty = plots.plot_misclassified([], [], [], ["a", "b"], tmp_path / "none.png")
    assert min(_png(empty)) > 20
    rgb = [torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8) for _ in range(3)]
    grid = plots.plot_misclassified(rgb, [0, 1, 0], [1, 0, 1], ["cat", "dog"], tmp_path / "rgb.png")
    assert min(_png(grid)) > 100
