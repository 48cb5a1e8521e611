"""A small plain CNN baseline: a few 3x3 conv layers with ReLU (and 2x2 max-pooling), then one hidden layer.

With ``padding=0, pool=False, hidden_dim=None`` and ``code_size=128`` it is seed 001's ConvEncoder (three
unpadded 3x3 convolutions of 32 channels, a linear 128-wide code, the classifier): 2,002,698 parameters on
one-channel 28x28 input.
"""

from __future__ import annotations

from torch import nn

from ._checks import check_bool, check_positive
from ._registry import register_model
from ._wrap import Classifier
from .exceptions import InvalidArchError

__all__ = ["SimpleCNN", "conv_output_size"]

KERNEL = 3


def conv_output_size(img_size: int, depth: int, padding: int, pool: bool) -> int:
    """Side of the feature map after ``depth`` 3x3 convolutions (stride 1, ``padding``), each optionally pooled."""
    size = img_size
    for _ in range(depth):
        size = size + 2 * padding - KERNEL + 1
        if pool:
            size //= 2
    return size


class SimpleCNN(nn.Sequential):
    """``depth`` blocks of conv3x3-ReLU(-maxpool2), flatten, then (unless ``hidden_dim`` is None) Linear to
    ``hidden_dim`` and ReLU. ``out_features`` is the width it hands to the code layer or head."""

    def __init__(
        self, in_chans: int, img_size: int, width: int, depth: int, hidden_dim: int | None, pool: bool,
        padding: int = 1,
    ) -> None:
        layers: list[nn.Module] = []
        channels = in_chans
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, kernel_size=KERNEL, padding=padding), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            channels = width
        size = conv_output_size(img_size, depth, padding, pool)
        layers.append(nn.Flatten())
        self.out_features = width * size * size
        if hidden_dim is not None:
            layers += [nn.Linear(self.out_features, hidden_dim), nn.ReLU(inplace=True)]
            self.out_features = hidden_dim
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
    hidden_dim: int | None = 128,
    pool: bool = True,
    padding: int = 1,
) -> Classifier:
    """Three 3x3 conv layers of 32 channels, each halving the map, and a 128-wide hidden layer.

    ``padding`` is the convolutions' zero padding (1 keeps the map's size, 0 shrinks it by 2 per layer);
    ``hidden_dim=None`` drops the hidden layer, so the flattened map feeds the code layer or the head.
    """
    check_positive(width=width, depth=depth)
    if hidden_dim is not None:
        check_positive(hidden_dim=hidden_dim)
    check_bool(pool=pool)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InvalidArchError(f"padding must be a non-negative integer, got padding={padding!r}")
    size = conv_output_size(img_size, depth, padding, pool)
    if size < 1:
        raise InvalidArchError(
            f"the feature map vanishes: {depth=} convolutions with {padding=} and {pool=} leave {size} pixels "
            f"of {img_size=}"
        )
    backbone = SimpleCNN(in_chans, img_size, width, depth, hidden_dim, pool, padding)
    return Classifier(backbone, backbone.out_features, num_classes, code_size)
