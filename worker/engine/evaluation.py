"""Inference passes over a batch source: validation loss and accuracy, predictions, embeddings."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .loader import BatchSource, Preprocess
from .losses import LossFn, predictions
from .precision import Precision


@torch.no_grad()
def loss_and_accuracy(
    model: Callable[[Tensor], Tensor],
    source: BatchSource,
    prep: Preprocess,
    precision: Precision,
    loss_fn: LossFn,
    *,
    module: nn.Module,
) -> tuple[float, float]:
    """Mean loss and accuracy over every sample of ``source``, in eval mode."""
    was_training = module.training
    module.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=source.device)
    correct = torch.zeros((), dtype=torch.int64, device=source.device)
    seen = 0
    try:
        for images, labels in source.batches():
            with precision.autocast():
                outputs = model(prep.eval(images))
            loss_sum += loss_fn(outputs, labels).double() * len(labels)
            correct += (predictions(outputs) == labels).sum()
            seen += len(labels)
    finally:
        module.train(was_training)
    if seen == 0:
        return float("nan"), float("nan")
    return loss_sum.item() / seen, correct.item() / seen


@torch.no_grad()
def predict(
    model: Callable[[Tensor], Tensor], source: BatchSource, prep: Preprocess, precision: Precision, *, module: nn.Module
) -> tuple[Tensor, Tensor]:
    """Predicted and true classes (CPU int64) of every sample of ``source``, in its order."""
    was_training = module.training
    module.eval()
    preds, truth = [], []
    try:
        for images, labels in source.batches():
            with precision.autocast():
                preds.append(predictions(model(prep.eval(images))).cpu())
            truth.append(labels.cpu())
    finally:
        module.train(was_training)
    if not preds:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(truth)


@torch.no_grad()
def embed(
    module: nn.Module, source: BatchSource, prep: Preprocess, precision: Precision, order: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``forward_features`` embeddings (CPU float32 [N,D]) and labels of the samples in ``order``."""
    features: Callable[[Tensor], Tensor] = getattr(module, "forward_features")  # noqa: B009
    was_training = module.training
    module.eval()
    feats, truth = [], []
    try:
        for images, labels in source.batches(order):
            with precision.autocast():
                feats.append(features(prep.eval(images)).float().flatten(1).cpu())
            truth.append(labels.cpu())
    finally:
        module.train(was_training)
    return torch.cat(feats), torch.cat(truth)
