"""Gathers what the plots show from a trained model and writes them under ``workdir/plots``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import plots
from .evaluation import predict
from .loader import BatchSource, Preprocess
from .precision import Precision

MAX_MISCLASSIFIED = 32
WARP_SAMPLES = 8


def _image(dataset: Any, index: int) -> Tensor:
    return dataset[index][0]


def class_names(data: Any, num_classes: int) -> list[str]:
    names = list(getattr(data, "classes", None) or [])
    return [str(c) for c in names] if len(names) == num_classes else [str(i) for i in range(num_classes)]


@torch.no_grad()
def warp_pairs(model: nn.Module, source: BatchSource, prep: Preprocess, precision: Precision) -> tuple[Tensor, Tensor]:
    """The first validation images and the model's ``warp`` of them, both uint8 on the CPU."""
    warp: Callable[[Tensor], Tensor] = getattr(model, "warp")  # noqa: B009
    was_training = model.training
    model.eval()
    try:
        images, _ = next(source.batches(torch.arange(min(WARP_SAMPLES, len(source)))))
        with precision.autocast():
            warped = warp(prep.eval(images))
        return images.cpu(), prep.denormalize(warped).cpu()
    finally:
        model.train(was_training)


def write_plots(
    model: nn.Module,
    runner: Callable[[Tensor], Tensor],
    history: Sequence[dict[str, float]],
    val: BatchSource,
    prep: Preprocess,
    precision: Precision,
    classes: Sequence[str],
    outdir: Path,
) -> list[Path]:
    """``curves.png``, ``confusion_matrix.png``, ``misclassified.png`` and, for models with ``warp``, ``stn.png``."""
    outdir.mkdir(parents=True, exist_ok=True)
    written = [plots.plot_curves(history, outdir / "curves.png")] if history else []
    if len(val) == 0:
        return written
    preds, labels = predict(runner, val, prep, precision, module=model)
    written.append(plots.plot_confusion_matrix(preds, labels, classes, outdir / "confusion_matrix.png"))
    wrong = (preds != labels).nonzero().flatten()[:MAX_MISCLASSIFIED].tolist()
    written.append(
        plots.plot_misclassified(
            [_image(val.dataset, i) for i in wrong],
            [int(preds[i]) for i in wrong],
            [int(labels[i]) for i in wrong],
            classes,
            outdir / "misclassified.png",
        )
    )
    if callable(getattr(model, "warp", None)):
        originals, warped = warp_pairs(model, val, prep, precision)
        written.append(plots.plot_warps(originals, warped, outdir / "stn.png"))
    return written
