"""``fit``: the training loop of one trial, with per-epoch reports, checkpoints, resumption and a summary."""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from server.core.models import StopReason
from server.core.objectives import better
from worker.exceptions import TrialPruned, TrialStopped

from . import checkpoint, stats
from .budget import Budget
from .evaluation import loss_and_accuracy
from .figures import class_names, write_plots
from .loader import BatchSource, Preprocess, make_batches
from .losses import build_loss, hard_labels, predictions
from .optim import build_optimizer, build_scheduler
from .precision import Precision, resolve_precision
from .probe import svc_accuracy
from .results import EpochReport, FitResult
from .summary import history_summary

if TYPE_CHECKING:
    from server.core.spec import ExperimentSpec
    from worker.data import DatasetSplits

# On a GPU, checking the loss for NaN forces a host sync; do it every few steps there, every step on the CPU.
NAN_CHECK_EVERY_CUDA = 16
LAST, BEST = "last.pt", "best.pt"


@dataclass
class _Progress:
    """What a resumed run must carry on from: everything in ``history`` plus counters."""

    epoch: int = 0
    inputs_seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_acc: float = float("-inf")
    best_epoch: int = 0
    # best.pt's epoch and its value of the sweep's objective (``spec.metric`` by ``spec.direction``)
    best_value: float | None = None
    best_checkpoint_epoch: int = 0


class _Run:
    """One call of ``fit``: the model, data sources, optimisation state and generators, built once."""

    def __init__(self, model: nn.Module, data: DatasetSplits, spec: ExperimentSpec, device: torch.device) -> None:
        from worker.augment import build_augment

        t = spec.train
        self.spec, self.device, self.model = spec, device, model
        torch.manual_seed(t.seed)  # dropout, stochastic depth and other draws from the global generator
        self.memory = stats.PeakMemory(device)  # a slot runs many trials: the peak reported is this one's
        model.to(device)
        self.runner: Callable[[Tensor], Tensor] = torch.compile(model, mode=t.compile_mode) if t.compile else model
        self.precision = resolve_precision(t.precision, device)
        self.train_src = make_batches(data.train, batch_size=t.batch_size, device=device,
                                      num_workers=t.num_workers, seed=t.seed, on_device=t.data_on_device)
        self.val_src = make_batches(data.val, batch_size=t.batch_size, device=device,
                                    num_workers=t.num_workers, seed=t.seed, on_device=t.data_on_device)
        augment = build_augment(spec.dataset.augment, img_size=spec.dataset.img_size, in_chans=spec.dataset.in_chans)
        self.prep = Preprocess(data.mean, data.std, augment)
        self.num_classes = data.num_classes
        self.classes = class_names(data, data.num_classes)
        self.budget = Budget(len(self.train_src), t.batch_size, t.epochs, t.max_inputs, t.max_steps)
        self.optimizer = build_optimizer(model, t, device=device)
        self.scheduler = build_scheduler(self.optimizer, t, steps_per_epoch=self.budget.steps_per_epoch,
                                         total_steps=self.budget.total_steps, epochs=self.budget.epochs)
        self.scaler = self.precision.grad_scaler()
        self.train_loss = build_loss(t.loss, label_smoothing=t.label_smoothing)
        self.eval_loss = build_loss(t.loss)  # unsmoothed, so val_loss compares across label_smoothing values
        # Shuffling draws on the CPU (the same order on any device); augmentation on the device.
        self.shuffle_gen = torch.Generator().manual_seed(t.seed)
        # kornia draws its parameters on the CPU, seeded from this generator: keep it there, so the same seed
        # gives the same images on any device and drawing a batch's seed never waits for the GPU
        self.augment_gen = torch.Generator().manual_seed(t.seed + 1)
        self.nan_check_every = NAN_CHECK_EVERY_CUDA if device.type == "cuda" else 1
        self.progress = _Progress()
        self.guard: Callable[[], None] | None = None  # called before every checkpoint write (see ``fit``)

    # -- checkpoints ------------------------------------------------------------------------------------------

    def save_last(self, path: Path) -> Path:
        if self.guard is not None:
            self.guard()
        p = self.progress
        return checkpoint.save({
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": p.epoch,
            "inputs_seen": p.inputs_seen,
            "history": p.history,
            "best_val_acc": p.best_val_acc,
            "best_epoch": p.best_epoch,
            "best_value": p.best_value,
            "best_checkpoint_epoch": p.best_checkpoint_epoch,
            "rng": checkpoint.rng_state(self.shuffle_gen, self.augment_gen),
            "spec": self.spec.model_dump(mode="json"),
        }, path)

    def save_best(self, path: Path, metrics: dict[str, float]) -> Path:
        if self.guard is not None:
            self.guard()
        return checkpoint.save({"model": self.model.state_dict(), "epoch": self.progress.epoch, "metrics": metrics,
                                "objective": self.spec.metric, "direction": self.spec.direction,
                                "spec": self.spec.model_dump(mode="json")}, path)

    def restore(self, path: Path) -> None:
        state = checkpoint.read(path)
        if "optimizer" not in state:
            raise ValueError(f"{path} holds weights only; resume needs a last.pt written by fit")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"], self.shuffle_gen, self.augment_gen)
        self.progress = _Progress(state["epoch"], state["inputs_seen"], list(state["history"]),
                                  state["best_val_acc"], state["best_epoch"])
        if "best_checkpoint_epoch" in state:
            self.progress.best_value, self.progress.best_checkpoint_epoch = state["best_value"], state["best_checkpoint_epoch"]
        else:  # written before best.pt followed the objective: its best.pt is the best val_acc's
            self.progress.best_checkpoint_epoch = state["best_epoch"]
            self.progress.best_value = next((h.get(self.spec.metric) for h in self.progress.history
                                             if h.get("epoch") == state["best_epoch"]), None)

    # -- one epoch --------------------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this epoch's share of the budget; running loss and accuracy, throughput."""
        model, optimizer, scaler = self.model, self.optimizer, self.scaler
        clip = self.spec.train.grad_clip
        order = torch.randperm(len(self.train_src), generator=self.shuffle_gen)[: self.budget.inputs(epoch)]
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        seen, waited, step = 0, 0.0, 0
        start = time.perf_counter()
        batches = iter(self.train_src.batches(order))
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)  # host time blocked on the input pipeline: the data wait
            waited += time.perf_counter() - asked
            if batch is None:
                break
            images, labels = batch
            step += 1
            inputs, targets = self.prep.train_batch(images, labels, self.augment_gen, num_classes=self.num_classes)
            with self.precision.autocast():
                outputs = self.runner(inputs)
            loss = self.train_loss(outputs, targets)
            nonfinite |= ~torch.isfinite(loss.detach())
            if step % self.nan_check_every == 0 and nonfinite.item():
                raise TrialPruned(epoch, reason="nan loss")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            self.scheduler.after_step()
            loss_sum += loss.detach().double() * len(labels)
            correct += (predictions(outputs.detach()) == hard_labels(targets)).sum()
            seen += len(labels)
        if nonfinite.item():
            raise TrialPruned(epoch, reason="nan loss")
        train_loss, train_correct = loss_sum.item(), correct.item()  # host sync: the epoch's work is done
        seconds = time.perf_counter() - start
        self.progress.inputs_seen += seen
        return {
            "train_loss": train_loss / max(1, seen),
            "train_acc": train_correct / max(1, seen),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "images_per_second": seen / seconds if seconds > 0 else 0.0,
            "data_wait": waited / seconds if seconds > 0 else 0.0,
            "inputs_seen": float(self.progress.inputs_seen),
        }

    def validate(self) -> dict[str, float]:
        """Validation loss and accuracy; nothing for a run without a validation split (``val_fraction: 0``)."""
        if len(self.val_src) == 0:
            return {}
        loss, acc = loss_and_accuracy(self.runner, self.val_src, self.prep, self.precision, self.eval_loss,
                                      module=self.model)
        return {"val_loss": loss, "val_acc": acc}

    # -- the end ----------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, float]:
        p, t, ds = self.progress, self.spec.train, self.spec.dataset
        flops = stats.forward_flops(self.model, (ds.in_chans, ds.img_size, ds.img_size), self.device)
        nan = float("nan")
        out: dict[str, float] = {
            "param_count": float(stats.count_params(self.model)),
            "flops_per_image": float(flops),
            **self.memory.figures(),
            "best_val_acc": nan, "best_epoch": 0.0, "final_train_acc": nan, "final_val_acc": nan,
            "final_val_loss": nan, "seconds_per_epoch": nan, "median_images_per_second": nan,
            **history_summary(p.history),
            "inputs_seen": float(p.inputs_seen),
        }
        mfu = stats.mfu(flops, out["median_images_per_second"], self.device, self.precision.name)
        if mfu is not None:
            out["mfu"] = mfu
        probe = t.probe()
        if probe is not None:
            last = p.history[-1] if p.history else {}
            # The last epoch probed already: the same weights, sample and seed, so the same SVC; not fitted twice.
            svc = last["svc_acc"] if "svc_acc" in last else self.svc_acc(probe.samples)
            if svc is not None:
                out["svc_acc"] = svc
        return out

    def svc_acc(self, samples: int) -> float | None:
        """The SVC probe on the model as it stands, fit on ``samples`` training images (seeded by the trial)."""
        return svc_accuracy(self.model, self.train_src, self.val_src, self.prep, self.precision,
                            seed=self.spec.train.seed, max_train=samples)

    def probe_epoch(self, epoch: int) -> dict[str, float]:
        """``svc_acc`` of an epoch the spec probes at (``svc_probe: {every: N}``); nothing at the others."""
        probe = self.spec.train.probe()
        if probe is None or not probe.every or epoch % probe.every:
            return {}
        svc = self.svc_acc(probe.samples)
        return {} if svc is None else {"svc_acc": svc}

    def close(self) -> None:
        self.memory.close()
        self.train_src.close()
        self.val_src.close()


def fit(
    model: nn.Module,
    data: DatasetSplits,
    spec: ExperimentSpec,
    *,
    device: torch.device,
    on_epoch: Callable[[EpochReport], None],
    workdir: Path,
    resume: Path | None = None,
    stop: Callable[[], bool] | None = None,
    guard: Callable[[], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` as ``spec.train`` says, reporting every epoch to ``on_epoch``.

    Each epoch writes ``workdir/best.pt`` when the sweep's objective (``spec.metric`` by ``spec.direction``)
    improves and ``workdir/last.pt`` every ``checkpoint_every`` epochs and after the last, then calls
    ``on_epoch``, then polls ``stop``. With ``resume`` (a ``last.pt``), training carries on from the epoch after
    the saved one with the saved optimiser, schedule, scaler, generators and history, so the result matches an
    uninterrupted run. ``guard`` is called before every checkpoint write: it raises :class:`TrialStopped` when
    the trial is no longer this process's to write (its lease was lost), and nothing is written.

    Raises:
        TrialPruned: a NaN or infinite training loss, or raised by ``on_epoch`` (after the checkpoints).
        TrialStopped: ``stop()`` returned true at an epoch boundary, or raised by ``on_epoch`` or ``guard``;
            ``last.pt`` then holds the epoch just finished, unless the lease was lost.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    last, best = workdir / LAST, workdir / BEST
    run = _Run(model, data, spec, device)
    run.guard = guard
    try:
        if resume is not None:
            run.restore(Path(resume))
        with warnings.catch_warnings(), attention_kernels(spec.train.fused_attention):
            # A GradScaler that skips an overflowing fp16 step makes the scheduler warn about step order.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            _train(run, on_epoch, last, best, stop)
            return _finish(run, workdir, last, best)
    finally:
        run.close()


def attention_kernels(fused: bool) -> contextlib.AbstractContextManager:
    """``scaled_dot_product_attention``'s own choice of kernel (flash, memory-efficient, cuDNN), or with
    ``fused=False`` the plain math kernel only (the attention the studies' code computed by hand)."""
    if fused:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _train(
    run: _Run, on_epoch: Callable[[EpochReport], None], last: Path, best: Path, stop: Callable[[], bool] | None
) -> None:
    p, every = run.progress, run.spec.train.checkpoint_every
    for epoch in range(p.epoch + 1, run.budget.epochs + 1):
        start = time.perf_counter()
        metrics = run.train_epoch(epoch)
        metrics.update(run.validate())
        run.scheduler.after_epoch(metrics)
        metrics["epoch_seconds"] = time.perf_counter() - start
        metrics.update(run.probe_epoch(epoch))  # after the clock: epoch_seconds stays training and validation
        p.epoch = epoch
        p.history.append({"epoch": float(epoch), **metrics})
        if metrics.get("val_acc", float("-inf")) > p.best_val_acc:
            p.best_val_acc, p.best_epoch = metrics["val_acc"], epoch
        value = metrics.get(run.spec.metric)
        if value is not None and better(value, p.best_value, run.spec.direction):
            p.best_value, p.best_checkpoint_epoch = float(value), epoch
            run.save_best(best, metrics)
        due = epoch % every == 0 or epoch == run.budget.epochs
        written = run.save_last(last) if due else None
        try:
            on_epoch(EpochReport(epoch, dict(metrics), written))
            if stop is not None and stop():
                raise TrialStopped("stop requested")
        except TrialStopped as exc:
            # Stopped between due checkpoints: keep this epoch's work for the resume; a lost lease writes nothing.
            if written is None and exc.reason != StopReason.lease_lost:
                run.save_last(last)
            raise


def _finish(run: _Run, workdir: Path, last: Path, best: Path) -> FitResult:
    p = run.progress
    if p.history and not last.exists():
        run.save_last(last)
    summary = run.summary()
    artifacts = (
        write_plots(run.model, run.runner, p.history, run.val_src, run.prep, run.precision, run.classes,
                    workdir / "plots")
        if run.spec.train.plots
        else []
    )
    model = None
    if best.exists():  # a copy with the best epoch's weights, as best.pt holds them; the caller's model is left be
        model = copy.deepcopy(run.model).to("cpu")
        model.load_state_dict(checkpoint.read(best)["model"])
    return FitResult(
        history=[dict(h) for h in p.history],
        best_val_acc=p.best_val_acc,
        best_epoch=p.best_epoch,
        final=dict(p.history[-1]) if p.history else {},
        summary=summary,
        checkpoints={name: path for name, path in (("best", best), ("last", last)) if path.exists()},
        artifacts=artifacts,
        model=model,
    )


def evaluate(model: nn.Module, data: DatasetSplits, spec: ExperimentSpec, device: torch.device) -> dict[str, Any]:
    """Validation loss and accuracy of ``model`` as it stands (``val_loss``, ``val_acc``), as ``fit`` computes them;
    empty without a validation split."""
    t = spec.train
    if len(data.val) == 0:  # no validation split (val_fraction: 0): nothing to evaluate on
        return {}
    model.to(device)
    precision: Precision = resolve_precision(t.precision, device)
    source: BatchSource = make_batches(data.val, batch_size=t.batch_size, device=device,
                                       num_workers=t.num_workers, seed=t.seed, on_device=t.data_on_device)
    try:
        loss, acc = loss_and_accuracy(model, source, Preprocess(data.mean, data.std), precision,
                                      build_loss(t.loss), module=model)
    finally:
        source.close()
    return {"val_loss": loss, "val_acc": acc}
