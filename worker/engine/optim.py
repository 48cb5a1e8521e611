"""Optimizers and learning-rate schedules built from a ``TrainSpec``.

The short names' schedules are stepped once per optimizer step, so fractional warm-up epochs and budgets given
in inputs or steps work the same as whole epochs; each is a ``LambdaLR`` over a pure function of the step, so a
checkpoint only needs the step count to resume it. A ``{name: ...}`` block builds that torch class with its
keywords (checked at submission by :mod:`server.core.spec.torchnames`), stepped per batch or per epoch as the
block's ``interval`` says, ReduceLROnPlateau on its monitored metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from server.core.spec.torchnames import optimizer_recipe, scheduler_recipe, takes

if TYPE_CHECKING:
    from server.core.spec import TrainSpec

# OneCycle's start and end learning rates, as fractions of the peak (torch's OneCycleLR defaults).
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_DEFAULT_WARMUP = 0.3
# The optimizers with fused CUDA kernels that train.fused_optimizer switches on.
FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def param_groups(model: nn.Module, weight_decay: float | None, *, decay_all: bool = False) -> list[dict]:
    """Decay matrices and kernels; biases, norm scales and other 1-d parameters only with ``decay_all``.

    ``weight_decay`` None: the optimizer takes none (the groups carry no ``weight_decay`` key).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 or decay_all else no_decay).append(param)
    if weight_decay is None:
        return [{"params": decay + no_decay}]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def use_fused(setting: bool | str, device: torch.device) -> bool:
    """Whether the optimiser runs fused kernels: ``auto`` means on a GPU (elsewhere the foreach default)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def build_optimizer(model: nn.Module, train: TrainSpec, device: torch.device | None = None) -> torch.optim.Optimizer:
    """``train.optimizer`` at ``train.lr``: ``adam``, ``adamw``, ``sgd`` (with ``momentum`` and ``nesterov``) or
    a torch class by name with its keywords. Weight decay is the block's, else ``train.weight_decay``, else
    torch's default for the class; fused kernels as ``train.fused_optimizer`` says for ``device`` (the model's,
    by default) where the class has them."""
    recipe = optimizer_recipe(train)
    groups = param_groups(model, recipe.weight_decay, decay_all=train.decay_norm_and_bias)
    if device is None:
        device = next(model.parameters()).device
    keywords = dict(recipe.keywords)
    if recipe.cls in FUSED and takes(recipe.cls, "fused"):  # others' fused kernels are CPU-only, or missing
        keywords["fused"] = True if use_fused(train.fused_optimizer, device) else None  # None: torch's foreach default
    if recipe.cls is torch.optim.SGD and keywords.get("nesterov") and not keywords.get("momentum"):
        raise ValueError(f"nesterov needs momentum > 0, got momentum={keywords.get('momentum', 0)}")
    return recipe.cls(groups, lr=train.lr, **keywords)  # type: ignore[no-any-return]


class Schedule:
    """The learning-rate schedule of a run: steps its scheduler after every optimizer step or at the end of
    every epoch (ReduceLROnPlateau with the epoch's monitored metric), and checkpoints it."""

    def __init__(
        self, scheduler: LRScheduler | ReduceLROnPlateau, interval: str = "step", monitor: str | None = None
    ) -> None:
        self.scheduler = scheduler
        self.interval = interval
        self.monitor = monitor

    def after_step(self) -> None:
        if self.interval == "step" and not isinstance(self.scheduler, ReduceLROnPlateau):  # a plateau: per epoch
            self.scheduler.step()

    def after_epoch(self, metrics: dict[str, float]) -> None:
        if self.interval != "epoch":
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            assert self.monitor is not None
            self.scheduler.step(metrics[self.monitor])
        else:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def lr_factor(train: TrainSpec, *, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """The multiplier of ``train.lr`` at each optimizer step (0-based) for ``train.scheduler``."""
    steps_per_epoch = max(1, steps_per_epoch)
    total_steps = max(1, total_steps)
    warmup = min(total_steps, round(train.warmup_epochs * steps_per_epoch))
    kind = train.scheduler

    if kind == "onecycle":
        # Linear rise from lr/25 to lr, then cosine annealing to lr/25e4; momentum is not cycled.
        rise = warmup if train.warmup_epochs > 0 else round(ONECYCLE_DEFAULT_WARMUP * total_steps)
        rise = min(max(rise, 1), total_steps)
        start, end = 1.0 / ONECYCLE_DIV, 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)

        def onecycle(step: int) -> float:
            if step < rise:
                return start + (1.0 - start) * step / rise
            span = max(1, total_steps - rise)
            t = min(1.0, (step - rise) / span)
            return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))

        return onecycle

    def warm(step: int) -> float:
        return (step + 1) / warmup if step < warmup else 1.0

    if kind == "constant":
        return warm
    if kind == "cosine":

        def cosine(step: int) -> float:
            if step < warmup:
                return warm(step)
            t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * t))

        return cosine
    if kind == "step":
        every = train.step_size * steps_per_epoch

        def step_decay(step: int) -> float:
            return warm(step) * train.gamma ** (step // every)

        return step_decay
    raise ValueError(f"unknown scheduler {kind!r}; valid: constant, cosine, onecycle, step")


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainSpec, *, steps_per_epoch: int, total_steps: int, epochs: int = 1
) -> Schedule:
    """``train.scheduler`` over a run of ``total_steps`` optimizer steps in ``epochs`` epochs: a per-step
    ``LambdaLR`` for the short names, the named torch class for a block (its run length filled from these)."""
    recipe = scheduler_recipe(train, total_steps=total_steps, epochs=epochs)
    if recipe is None:
        return Schedule(LambdaLR(optimizer, lr_factor(train, steps_per_epoch=steps_per_epoch, total_steps=total_steps)))
    return Schedule(recipe.cls(optimizer, **recipe.keywords), recipe.interval, recipe.monitor)
