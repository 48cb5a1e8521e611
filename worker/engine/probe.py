"""Linear-separability probe: an SVC fitted on frozen ``forward_features`` embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from server.core.spec.sections import SVC_SAMPLES

from .evaluation import embed
from .loader import BatchSource, Preprocess
from .precision import Precision

MAX_VAL_SAMPLES = 10000


@dataclass(frozen=True)
class ProbeScore:
    """One probe: the SVC's validation accuracy, and how many images it was fit on and scored on."""

    accuracy: float
    fitted: int
    scored: int


def svc_probe(
    model: nn.Module,
    train: BatchSource,
    val: BatchSource,
    prep: Preprocess,
    precision: Precision,
    *,
    seed: int,
    max_train: int = SVC_SAMPLES,
    max_val: int = MAX_VAL_SAMPLES,
) -> ProbeScore | None:
    """``sklearn.svm.SVC()`` (default parameters) fit on embeddings of ``max_train`` training images (a sample
    seeded by ``seed``; all of them where there are fewer) and scored on up to ``max_val`` validation images.

    Returns ``None`` where the probe cannot be fitted: no ``forward_features``, fewer than two classes in the
    sample, or non-finite embeddings.
    """
    from sklearn.svm import SVC

    if not hasattr(model, "forward_features") or len(train) == 0 or len(val) == 0:
        return None
    gen = torch.Generator().manual_seed(seed)
    train_order = torch.randperm(len(train), generator=gen)[:max_train].sort().values
    val_order = torch.randperm(len(val), generator=gen)[:max_val].sort().values if len(val) > max_val else None
    x_train, y_train = embed(model, train, prep, precision, train_order)
    x_val, y_val = embed(model, val, prep, precision, val_order)
    if y_train.unique().numel() < 2 or not (x_train.isfinite().all() and x_val.isfinite().all()):
        return None
    svc = SVC().fit(x_train.numpy(), y_train.numpy())
    return ProbeScore(float(svc.score(x_val.numpy(), y_val.numpy())), len(y_train), len(y_val))


def svc_accuracy(
    model: nn.Module, train: BatchSource, val: BatchSource, prep: Preprocess, precision: Precision, *, seed: int,
    max_train: int = SVC_SAMPLES, max_val: int = MAX_VAL_SAMPLES,
) -> float | None:
    """:func:`svc_probe`'s accuracy alone."""
    score = svc_probe(model, train, val, prep, precision, seed=seed, max_train=max_train, max_val=max_val)
    return None if score is None else score.accuracy
