"""A generated, learnable task: class prototypes (smooth random patterns) shifted and drowned in noise."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from worker.data._registry import register_dataset
from worker.data.base import DatasetLoader
from worker.data.splits import RawData, RawSplit


@register_dataset
class Synthetic(DatasetLoader):
    """Each class has a smooth random prototype; a sample is its prototype, randomly shifted by up to 1/8 of
    the image, with random brightness and per-pixel Gaussian noise. Linearly separable enough to learn in a
    few epochs, noisy enough not to be trivial.

    Options: ``num_samples`` (total, before the 20% validation hold-out), ``num_classes``, ``noise`` (std of
    the pixel noise relative to the pattern's), and ``data_seed``,
    which fixes the task itself so that trials with different ``seed`` values train on the same data.
    """

    name = "synthetic"
    options = {"num_samples": 2048, "num_classes": 10, "data_seed": 0, "noise": 1.0}
    source = "It is generated; no files are needed."

    def check_channels(self, in_chans: int) -> None:
        """Generated with ``in_chans`` channels directly: any count works."""

    def required(self) -> list[Path]:
        return []

    def read(self, *, with_val: bool) -> RawData:
        num_samples, num_classes = self.opts["num_samples"], self.opts["num_classes"]
        for key, value, low in (("num_samples", num_samples, 2), ("num_classes", num_classes, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"option {key} must be an integer >= {low}, got {key}={value!r}")
        if num_samples < 2 * num_classes:
            raise ValueError(f"need at least two samples per class, got {num_samples=} for {num_classes=}")
        noise = float(self.opts["noise"])
        size, chans = self.img_size, self.in_chans
        gen = torch.Generator().manual_seed(int(self.opts["data_seed"]))
        coarse = torch.rand((num_classes, chans, 4, 4), generator=gen)
        protos = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        protos = (protos - protos.mean((1, 2, 3), keepdim=True)) / protos.std(
            (1, 2, 3), keepdim=True
        ).clamp_min(1e-3)
        labels = torch.arange(num_samples) % num_classes
        labels = labels[torch.randperm(num_samples, generator=gen)]
        max_shift = max(1, size // 8)
        shifts = torch.randint(-max_shift, max_shift + 1, (num_samples, 2), generator=gen)
        images = torch.empty((num_samples, chans, size, size), dtype=torch.uint8)
        brightness = 0.5 + 0.1 * torch.randn(num_samples, generator=gen)
        for i in range(num_samples):  # a few thousand rolls: cheap next to any training step
            pattern = torch.roll(
                protos[labels[i]], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2)
            )
            img = brightness[i] + 0.15 * (pattern + noise * torch.randn(pattern.shape, generator=gen))
            images[i] = (img * 255).round().clamp(0, 255).to(torch.uint8)
        classes = [f"class_{k}" for k in range(num_classes)]
        return RawData(train=RawSplit(labels.numpy(), images=images), val=None, classes=classes)
