"""The base class of augmentation presets: batched, per-sample random, deterministic given a generator."""

from __future__ import annotations

import abc

import torch


class Augment(abc.ABC):
    """A preset applied to a whole uint8 batch ``[N, C, H, W]`` on any device.

    Every image draws its own parameters, all from the ``generator`` passed in (never the global RNG), so the
    same generator state gives the same output on CPU and on CUDA. Subclasses implement :meth:`apply`.
    """

    name: str  # a preset or "pipeline"; instances may carry their preset name
    random: bool = True

    def __init__(self, *, img_size: int) -> None:
        if img_size < 1:
            raise ValueError(f"img_size must be positive, got {img_size=}")
        self.img_size = img_size

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"augment {self.name!r} takes uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            return images
        out = self.apply(images, generator)
        assert out.shape == images.shape and out.dtype == torch.uint8, f"{self.name} broke the batch contract"
        return out

    @abc.abstractmethod
    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a non-empty uint8 batch; return a uint8 batch of the same shape on the same device."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(img_size={self.img_size})"
