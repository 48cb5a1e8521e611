"""ResNet-18 from torchvision, optionally with the CIFAR stem that keeps 32px inputs from shrinking to 1x1."""

from __future__ import annotations

from torch import nn

from ._checks import check_bool
from ._registry import register_model
from ._wrap import Classifier

__all__: list[str] = []

# Below this size torchvision's 7x7/2 conv and max-pool leave too little spatial extent for four stages.
CIFAR_STEM_BELOW = 96


@register_model
def resnet18(
    *,
    num_classes: int,
    img_size: int,
    in_chans: int = 3,
    code_size: int | None = None,
    cifar_stem: bool | None = None,
    zero_init_residual: bool = False,
) -> Classifier:
    """torchvision ResNet-18; ``cifar_stem`` (default: on below 96px) is a 3x3 stride-1 conv and no max-pool."""
    if cifar_stem is None:
        cifar_stem = img_size < CIFAR_STEM_BELOW
    check_bool(cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)
    # groups and width_per_group are not offered: torchvision's BasicBlock supports only their defaults.
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=1, zero_init_residual=zero_init_residual)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if cifar_stem or in_chans != 3:
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    num_features = model.fc.in_features
    model.fc = nn.Identity()
    arch = dict(cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)
    return Classifier(model, num_features, num_classes, code_size, arch=arch)
