"""Training losses by name: ``cross_entropy``, ``l2`` (squared distance to the one-hot class vector, summed over
classes) and ``mse`` (torch's ``mse_loss`` against the one-hot vector: a mean over every element, as the
Fashion-MNIST study reports its l2 losses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

LossName = Literal["cross_entropy", "l2", "mse"]
LossFn = Callable[[Tensor, Tensor], Tensor]


def one_hot(outputs: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """The (smoothed) one-hot targets of ``labels``, shaped and typed as ``outputs``; soft targets
    (``[N, classes]`` probabilities, from MixUp or CutMix) are taken as they are, then smoothed."""
    num_classes = outputs.shape[-1]
    target = labels.to(outputs.dtype) if labels.is_floating_point() else F.one_hot(labels, num_classes).to(outputs.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    return target


def l2_loss(outputs: Tensor, labels: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Mean over the batch of the squared Euclidean distance between the output and the (smoothed) one-hot."""
    return (outputs - one_hot(outputs, labels, label_smoothing)).pow(2).sum(dim=-1).mean()


def build_loss(name: LossName, *, label_smoothing: float = 0.0) -> LossFn:
    """The loss ``fn(outputs, labels) -> scalar`` (mean over the batch), computed in float32. ``labels`` are class
    indices or soft targets (``[N, classes]`` probabilities): cross-entropy with probabilities, l2 and mse
    against them instead of the one-hot."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing=}")
    if name == "cross_entropy":

        def cross_entropy(outputs: Tensor, labels: Tensor) -> Tensor:
            return F.cross_entropy(outputs.float(), labels, label_smoothing=label_smoothing)

        return cross_entropy
    if name == "l2":

        def l2(outputs: Tensor, labels: Tensor) -> Tensor:
            return l2_loss(outputs.float(), labels, label_smoothing=label_smoothing)

        return l2
    if name == "mse":

        def mse(outputs: Tensor, labels: Tensor) -> Tensor:
            outputs = outputs.float()
            return F.mse_loss(outputs, one_hot(outputs, labels, label_smoothing))

        return mse
    raise ValueError(f"unknown loss {name!r}; valid: cross_entropy, l2, mse")


def hard_labels(targets: Tensor) -> Tensor:
    """Class indices of targets: the labels, or the arg-max of soft targets (what train_acc compares with)."""
    return targets.argmax(dim=-1) if targets.is_floating_point() else targets


def predictions(outputs: Tensor) -> Tensor:
    """Predicted classes: the arg-max of the outputs, for either loss."""
    return outputs.argmax(dim=-1)


__all__ = ["LossFn", "LossName", "build_loss", "hard_labels", "l2_loss", "predictions"]
