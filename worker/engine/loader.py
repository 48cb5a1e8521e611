"""Batches of uint8 images on the training device, behind one interface for both data paths.

In-memory image sets are copied to the device once and sliced there (no DataLoader, no host copies per step:
on a GPU the whole input pipeline stays on the GPU). Other image sets go through a ``DataLoader`` with worker
processes and pinned memory. Both visit samples in an order the caller gives, drawn from one seeded generator,
so the two paths see the same batches and a resumed run draws what the uninterrupted run would have.
Augmentation and normalisation run afterwards on the device batch (``Preprocess``), identically for both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

if TYPE_CHECKING:
    from worker.augment import Augment

Batch = tuple[Tensor, Tensor]


def batch_order(order: Tensor, batch_size: int) -> list[Tensor]:
    """Split sample indices into batches; a trailing batch of one sample joins the one before it.

    A batch of one breaks batch norm in training mode, so it is merged rather than dropped: every sample
    of the order is still visited exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size=}")
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


class BatchSource(ABC):
    """Yields ``(images uint8 [B,C,H,W], labels int64 [B])`` on ``device`` for a given order of samples."""

    def __init__(self, dataset: Any, *, batch_size: int, device: torch.device) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, order: Tensor | None = None) -> Iterator[Batch]:
        """Batches over ``order`` (CPU int64 sample indices), or over every sample in turn when ``None``."""
        if order is None:
            order = torch.arange(len(self))
        return self._batches(batch_order(order, self.batch_size))

    @abstractmethod
    def _batches(self, chunks: Sequence[Tensor]) -> Iterator[Batch]: ...

    @abstractmethod
    def close(self) -> None:
        """Release what the source holds (worker processes)."""


class DeviceBatches(BatchSource):
    """An in-memory image set held on the device as uint8 and indexed there."""

    def __init__(self, dataset: Any, *, batch_size: int, device: torch.device) -> None:
        super().__init__(dataset, batch_size=batch_size, device=device)
        self.images = dataset.images.to(device)
        self.labels = torch.as_tensor(dataset.labels, dtype=torch.long).to(device)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"in-memory images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}")

    def _batches(self, chunks: Sequence[Tensor]) -> Iterator[Batch]:
        for chunk in chunks:
            first, last = int(chunk[0]), int(chunk[-1])
            if last - first + 1 == len(chunk) and bool((chunk.diff() == 1).all()):
                yield self.images[first : last + 1], self.labels[first : last + 1]  # contiguous: a view
            else:
                index = chunk.to(self.device, non_blocking=True)
                yield self.images.index_select(0, index), self.labels.index_select(0, index)

    def close(self) -> None:
        """Nothing to release: the device copy goes with the source."""


class _PlannedBatches(Sampler[list[int]]):
    """A batch sampler whose batches are set before each pass; it lives in the main process."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class LoaderBatches(BatchSource):
    """A ``DataLoader`` over any image set: worker processes, pinned memory on CUDA, copies to the device."""

    def __init__(self, dataset: Any, *, batch_size: int, device: torch.device, num_workers: int, seed: int) -> None:
        super().__init__(dataset, batch_size=batch_size, device=device)
        self._plan = _PlannedBatches()
        self.loader = DataLoader(
            dataset,
            batch_sampler=self._plan,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def _batches(self, chunks: Sequence[Tensor]) -> Iterator[Batch]:
        self._plan.chunks = [chunk.tolist() for chunk in chunks]
        for images, labels in self.loader:
            yield (
                images.to(self.device, non_blocking=True),
                torch.as_tensor(labels, dtype=torch.long).to(self.device, non_blocking=True),
            )

    def close(self) -> None:
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None


def is_in_memory(dataset: Any) -> bool:
    """True for image sets held as one uint8 tensor (``TensorImageSet``)."""
    return bool(getattr(dataset, "in_memory", False)) and isinstance(getattr(dataset, "images", None), Tensor)


def make_batches(
    dataset: Any, *, batch_size: int, device: torch.device, num_workers: int = 0, seed: int = 0,
    on_device: bool | str = "auto",
) -> BatchSource:
    """The device-resident source for in-memory sets (``on_device`` ``auto`` or true; the spec's
    ``train.data_on_device``), a DataLoader source otherwise."""
    if on_device is not False and is_in_memory(dataset):
        return DeviceBatches(dataset, batch_size=batch_size, device=device)
    return LoaderBatches(dataset, batch_size=batch_size, device=device, num_workers=num_workers, seed=seed)


class Preprocess:
    """Augment (training only) then normalise uint8 device batches to float32 model inputs."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Augment | Callable[[Tensor, torch.Generator], Tensor] | None = None,
    ) -> None:
        from worker.augment import normalize

        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = augment
        self._normalize = normalize

    def train(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if self.augment is not None:
            images = self.augment(images, generator)
        return self._normalize(images, self.mean, self.std)

    def train_batch(self, images: Tensor, labels: Tensor, generator: torch.Generator, *,
                    num_classes: int) -> tuple[Tensor, Tensor]:
        """Model inputs and targets: the labels, or ``[N, num_classes]`` probabilities where a mix (MixUp,
        CutMix) has blended images and so their labels."""
        mixing = getattr(self.augment, "mixes_labels", False)
        if not mixing:
            return self.train(images, generator), labels
        images, targets = self.augment.augment(images, labels, generator, num_classes=num_classes)  # type: ignore[union-attr]
        return self._normalize(images, self.mean, self.std), targets

    def eval(self, images: Tensor) -> Tensor:
        return self._normalize(images, self.mean, self.std)

    def denormalize(self, inputs: Tensor) -> Tensor:
        """Model inputs back to uint8 images (for figures of warped inputs)."""
        mean = torch.tensor(self.mean, device=inputs.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=inputs.device).view(1, -1, 1, 1)
        return (inputs.float() * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)
