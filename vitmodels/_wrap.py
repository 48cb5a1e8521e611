"""The common face of every model: a backbone that pools to ``[B, D]``, an optional code layer, a head.

Upstream models disagree about what ``forward_features`` returns (tokens, maps, pooled vectors); wrapping each
backbone in :class:`Classifier` gives the trainer and the SVC probe one contract: ``forward_features(x)`` is the
embedding ``[B, num_features]`` and ``forward(x)`` the logits ``[B, num_classes]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """Backbone (images to ``[B, backbone_features]``), optional code Linear, linear classifier.

    Args:
        backbone: maps ``[B, C, H, W]`` to pooled features ``[B, backbone_features]``.
        backbone_features: width of the backbone's output.
        num_classes: width of the logits.
        code_size: if given, a Linear to this width sits before the head and its output is the embedding.
        arch: the architecture keywords the model was built with, defaults resolved (for logs and listings).
    """

    def __init__(
        self,
        backbone: nn.Module,
        backbone_features: int,
        num_classes: int,
        code_size: int | None = None,
        *,
        arch: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.code: nn.Module = nn.Identity() if code_size is None else nn.Linear(backbone_features, code_size)
        self.num_features: int = backbone_features if code_size is None else code_size
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)
        self.arch: dict[str, Any] = dict(arch or {})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``[B, num_features]``: the code layer's output when there is one."""
        return self.code(self.backbone(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from an embedding."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
