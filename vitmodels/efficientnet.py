"""EfficientNetV2-B0 from timm (``tf_efficientnetv2_b0``): a strong CNN baseline for fine-tuning.

The TF variant pads "same", so it runs at any input size. Keywords go to timm's ``EfficientNet``.
"""

from __future__ import annotations

from typing import Any

from ._registry import register_model
from ._timm import build_timm, wrap_timm
from ._wrap import Classifier

__all__: list[str] = []


@register_model
def efficientnetv2_b0(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **arch: Any,
) -> Classifier:
    """timm ``tf_efficientnetv2_b0``, randomly initialised (start from weights with ``pretrained``)."""
    named = dict(in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    from timm.models.efficientnet import EfficientNet

    backbone = build_timm(EfficientNet, "efficientnetv2_b0", named, arch, variant="tf_efficientnetv2_b0")
    resolved = dict(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    return wrap_timm(backbone, num_classes=num_classes, code_size=code_size, arch={**resolved, **arch})
