"""Figures of a run, drawn with matplotlib's object API (no pyplot state, Agg output) to PNG files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

DPI = 110
MAX_TICK_CLASSES = 50
MAX_ANNOTATED_CLASSES = 20


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _show_image(ax: Axes, image: Tensor) -> None:
    """Draw one uint8 [C,H,W] image: grey for one channel, the first three channels otherwise."""
    array = image.detach().cpu().numpy()
    if array.shape[0] < 3:
        ax.imshow(array[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(np.transpose(array[:3], (1, 2, 0)), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_curves(history: Sequence[dict[str, float]], path: Path) -> Path:
    """Loss and accuracy, training and validation, against epoch: two panels side by side."""
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for ax, key, title in ((loss_ax, "loss", "Loss"), (acc_ax, "acc", "Accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        if all(f"val_{key}" in h for h in history):  # a run without validation (val_fraction: 0) has none
            ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.set_ylim(0, 1.02)
    return _save(fig, path)


def plot_confusion_matrix(preds: Tensor, labels: Tensor, classes: Sequence[str], path: Path) -> Path:
    """Validation confusion matrix: rows true class, columns predicted, coloured by row fraction."""
    n = len(classes)
    counts = torch.zeros(n, n, dtype=torch.long)
    counts.index_put_((labels.long(), preds.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    fractions = counts.double() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(16.0, max(5.0, 0.45 * n + 2))
    fig = Figure(figsize=(side + 1, side))
    ax = fig.subplots()
    im = ax.imshow(fractions.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if n <= MAX_TICK_CLASSES:
        ax.set_xticks(range(n), [str(c) for c in classes], rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), [str(c) for c in classes])
    if n <= MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    dark = fractions[i, j] > 0.5
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
    accuracy = counts.diag().sum().item() / max(1, counts.sum().item())
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Validation confusion matrix (accuracy {accuracy:.3f})")
    return _save(fig, path)


def _rgb(image: Tensor) -> np.ndarray:
    """uint8 [C,H,W] as uint8 [H,W,3]: grey repeated, extra channels dropped."""
    array = image.detach().cpu().numpy()
    array = np.repeat(array[:1], 3, axis=0) if array.shape[0] < 3 else array[:3]
    return np.transpose(array, (1, 2, 0))


def plot_misclassified(
    images: Sequence[Tensor], preds: Sequence[int], labels: Sequence[int], classes: Sequence[str], path: Path
) -> Path:
    """A grid of misclassified validation images (uint8 [C,H,W]), each titled with predicted and true class.

    The grid is one mosaic image with text on it rather than one axes per image: several times faster.
    """
    count = len(images)
    if count == 0:
        fig = Figure(figsize=(4, 1.5))
        fig.text(0.5, 0.5, "no misclassified validation images", ha="center", va="center")
        return _save(fig, path)
    cols = min(8, count)
    rows = math.ceil(count / cols)
    h, w = images[0].shape[-2:]
    pad, band = max(1, w // 8), max(4, round(0.6 * h))  # gaps between tiles; room for the two text lines
    cell_h, cell_w = band + h + pad, w + pad
    mosaic = np.full((rows * cell_h + pad, cols * cell_w + pad, 3), 255, dtype=np.uint8)
    fig = Figure(figsize=(1.3 * cols, 1.3 * rows * cell_h / cell_w + 0.4))
    ax = fig.subplots()
    for i, (image, pred, true) in enumerate(zip(images, preds, labels, strict=True)):
        row, col = divmod(i, cols)
        top, left = row * cell_h + band + pad, col * cell_w + pad
        mosaic[top : top + h, left : left + w] = _rgb(image)
        ax.text(left + w / 2, top - 0.5, f"pred {classes[pred]}\ntrue {classes[true]}", ha="center", va="bottom",
                fontsize=7, color="firebrick", linespacing=1.1)
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    ax.set_title("Misclassified validation images")
    return _save(fig, path)


def plot_warps(originals: Tensor, warped: Tensor, path: Path) -> Path:
    """Inputs (uint8 [N,C,H,W]) each beside its spatial-transformer warp, up to four pairs a row."""
    count = len(originals)
    pairs_per_row = min(4, count)
    rows = math.ceil(count / pairs_per_row)
    fig = Figure(figsize=(3.0 * pairs_per_row, 1.7 * rows + 0.5))
    axes = fig.subplots(rows, 2 * pairs_per_row, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (original, warp) in enumerate(zip(originals, warped, strict=True)):
        row, col = divmod(i, pairs_per_row)
        for ax, image, title in ((axes[row, 2 * col], original, "input"), (axes[row, 2 * col + 1], warp, "warped")):
            ax.axis("on")
            _show_image(ax, image)
            ax.set_title(title, fontsize=8)
    fig.suptitle("Spatial transformer: inputs and their warps")
    return _save(fig, path)
