"""Optimizers and learning-rate schedules built from a ``TrainSpec``.

Schedules are stepped once per optimizer step, so fractional warm-up epochs and budgets given in inputs
(``max_inputs``) work the same as whole epochs. Every schedule is a ``LambdaLR`` over a pure function of the
step, so a checkpoint only needs the step count to resume it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

if TYPE_CHECKING:
    from server.core.spec import TrainSpec

# OneCycle's start and end learning rates, as fractions of the peak (torch's OneCycleLR defaults).
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_DEFAULT_WARMUP = 0.3


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and kernels only; biases, norm scales and other 1-d parameters are not decayed."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def use_fused(setting: bool | str, device: torch.device) -> bool:
    """Whether the optimiser runs fused kernels: ``auto`` means on a GPU (elsewhere the foreach default)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def build_optimizer(model: nn.Module, train: TrainSpec, device: torch.device | None = None) -> torch.optim.Optimizer:
    """``adam``, ``adamw`` or ``sgd`` (with ``momentum`` and ``nesterov``) at ``train.lr``; fused kernels as
    ``train.fused_optimizer`` says for ``device`` (the model's, by default)."""
    groups = param_groups(model, train.weight_decay)
    if device is None:
        device = next(model.parameters()).device
    fused = True if use_fused(train.fused_optimizer, device) else None  # None: torch's foreach default
    if train.optimizer == "adam":
        return torch.optim.Adam(groups, lr=train.lr, fused=fused)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train.lr, fused=fused)
    if train.optimizer == "sgd":
        if train.nesterov and train.momentum == 0:
            raise ValueError(f"nesterov needs momentum > 0, got momentum={train.momentum}")
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, nesterov=train.nesterov, fused=fused)
    raise ValueError(f"unknown optimizer {train.optimizer!r}; valid: adam, adamw, sgd")


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
    optimizer: torch.optim.Optimizer, train: TrainSpec, *, steps_per_epoch: int, total_steps: int
) -> LambdaLR:
    """A per-step ``LambdaLR`` for ``train.scheduler`` over a run of ``total_steps`` optimizer steps."""
    return LambdaLR(optimizer, lr_factor(train, steps_per_epoch=steps_per_epoch, total_steps=total_steps))
