"""A small plain CNN baseline: a few 3x3 conv layers with ReLU (and 2x2 max-pooling), then one hidden layer."""

from __future__ import annotations

from torch import nn

from ._checks import check_bool, check_positive
from ._registry import register_model
from ._wrap import Classifier
from .exceptions import InvalidArchError

__all__ = ["SimpleCNN"]


class SimpleCNN(nn.Sequential):
    """``depth`` blocks of conv3x3-ReLU(-maxpool2), flatten, Linear to ``hidden_dim``, ReLU."""

    def __init__(
        self, in_chans: int, img_size: int, width: int, depth: int, hidden_dim: int, pool: bool
    ) -> None:
        layers: list[nn.Module] = []
        channels, size = in_chans, img_size
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = width
        layers += [nn.Flatten(), nn.Linear(width * size * size, hidden_dim), nn.ReLU(inplace=True)]
        super().__init__(*layers)


@register_model
def cnn(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    width: int = 32,
    depth: int = 3,
    hidden_dim: int = 128,
    pool: bool = True,
) -> Classifier:
    """Three 3x3 conv layers of 32 channels, each halving the map, and a 128-wide hidden layer."""
    check_positive(width=width, depth=depth, hidden_dim=hidden_dim)
    check_bool(pool=pool)
    if pool and img_size < 2**depth:
        raise InvalidArchError(
            f"img_size must be at least 2**depth with pool=True, got {img_size=} for {depth=}"
        )
    backbone = SimpleCNN(in_chans, img_size, width, depth, hidden_dim, pool)
    return Classifier(backbone, hidden_dim, num_classes, code_size)
