"""Linear-separability probe: an SVC fitted on frozen ``forward_features`` embeddings."""

from __future__ import annotations

import torch
from torch import nn

from .evaluation import embed
from .loader import BatchSource, Preprocess
from .precision import Precision

MAX_TRAIN_SAMPLES = 5000
MAX_VAL_SAMPLES = 10000


def svc_accuracy(
    model: nn.Module,
    train: BatchSource,
    val: BatchSource,
    prep: Preprocess,
    precision: Precision,
    *,
    seed: int,
    max_train: int = MAX_TRAIN_SAMPLES,
    max_val: int = MAX_VAL_SAMPLES,
) -> float | None:
    """Validation accuracy of ``sklearn.svm.SVC()`` (default parameters) on embeddings of a training sample.

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
    return float(svc.score(x_val.numpy(), y_val.numpy()))
