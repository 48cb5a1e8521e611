"""A pipeline of kornia ops as an :class:`Augment`: what a spec's ``dataset.augment`` list builds, and presets too.

kornia draws its parameters from torch's global RNG. Each batch, the pipeline draws one seed from the trial's
augment generator, seeds the global RNG with it inside ``torch.random.fork_rng`` (which puts the global stream
back afterwards, CUDA's included), and runs kornia there: the same generator state gives the same images, the
model's own draws (dropout) never see kornia's, and checkpointing the generator resumes the stream. kornia
draws per-sample parameters on the CPU and applies them to the whole batch on the images' device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from server.core.spec import korniaops
from worker.augment import fastpath as FP
from worker.augment.base import Augment

SEED_BOUND = 2**62
PER_IMAGE_POLICIES = ("TrivialAugment", "AutoAugment")  # kornia picks their sub-policy once per call
FastCropFlip = tuple[int, FP.PadMode, float]  # (padding, pad mode, flip p) of the hand-written crop and flip
NO_FAST_PATH: FastCropFlip = (0, "zeros", 0.0)


class PerImagePolicy(torch.nn.Module):
    """A kornia TrivialAugment or AutoAugment whose sub-policy is drawn for every image, as in the papers (kornia
    draws one per call, i.e. per batch). Images are grouped by sub-policy, so each sub-policy runs batched."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy
        self.subpolicies = list(policy.children())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        choice = self.policy.rand_selector.sample((x.shape[0],))
        out = x.clone()
        for j in choice.unique().tolist():
            idx = (choice == j).nonzero().flatten().to(x.device)
            out.index_copy_(0, idx, self.subpolicies[j](x.index_select(0, idx)))
        return out


def _fast_crop_flip(ops: Sequence[tuple[str, dict[str, Any]]], img_size: int) -> tuple[FastCropFlip, int]:
    """``((padding, mode, flip_p), ops consumed)`` where the pipeline starts with the CIFAR recipe's
    ``RandomCrop(size=img_size, padding=p)`` (constant or reflect padding, nothing else set) and optionally
    ``RandomHorizontalFlip(p)``; ``(NO_FAST_PATH, 0)`` otherwise."""
    none = (NO_FAST_PATH, 0)
    if not ops or ops[0][0] != "RandomCrop":
        return none
    kw = dict(ops[0][1])
    size, padding, mode = kw.pop("size", None), kw.pop("padding", None), kw.pop("padding_mode", "constant")
    if kw or list(size or ()) != [img_size, img_size] or not isinstance(padding, int) or isinstance(padding, bool):
        return none
    if mode not in ("constant", "reflect") or padding < 0:
        return none
    pad_mode: FP.PadMode = "reflect" if mode == "reflect" else "zeros"
    if len(ops) > 1 and ops[1][0] == "RandomHorizontalFlip" and set(ops[1][1]) <= {"p"}:
        return (padding, pad_mode, float(ops[1][1].get("p", 0.5))), 2
    return (padding, pad_mode, 0.0), 1


class Pipeline(Augment):
    """kornia ops in order (kornia's ``ImageSequential``, with its ``random_apply``), then the label-mixing
    ones (RandomMixUpV2, RandomCutMixV2), which make soft targets (:meth:`augment`).

    ``per_sample`` draws ``random_apply``'s count and choice for every image (the ops keep the list's order);
    kornia's own ``random_apply`` draws them once per batch. A leading crop-and-flip in a pipeline without
    ``random_apply`` runs the hand-written gather (:mod:`worker.augment.fastpath`), which is much faster.
    """

    name = "pipeline"

    def __init__(self, *, img_size: int, ops: Sequence[Mapping[str, Any]], random_apply: Any = None,
                 per_sample: bool = False) -> None:
        super().__init__(img_size=img_size)
        from kornia.augmentation import ImageSequential

        self.spec_ops = [korniaops.split_op(op) for op in ops]
        parsed = list(self.spec_ops)
        self.fast, used = _fast_crop_flip(parsed, img_size) if random_apply is None else (NO_FAST_PATH, 0)
        parsed = parsed[used:]
        image_ops = [(n, kw) for n, kw in parsed if n not in korniaops.MIX]
        self.image_ops = [self._image_op(n, kw) for n, kw in image_ops]
        self.mixes = [korniaops.build_op(n, kw) for n, kw in parsed if n in korniaops.MIX]
        self.random = bool(self.spec_ops)
        self.per_sample = per_sample
        self.counts: tuple[int, int] | None = None
        self.sequence: Any = None
        if random_apply is not None and per_sample:
            self.counts = korniaops.random_apply_range(random_apply, len(self.image_ops))
        elif self.image_ops:
            ra = False if random_apply is None else korniaops.read_random_apply(random_apply, len(self.image_ops))
            self.sequence = ImageSequential(*self.image_ops, random_apply=ra)

    @staticmethod
    def _image_op(name: str, keywords: Mapping[str, Any]) -> Any:
        op = korniaops.build_op(name, keywords)
        return PerImagePolicy(op) if name in PER_IMAGE_POLICIES else op

    @property
    def ops(self) -> list[str]:
        """The class names of the ops, in order (the fast path's included)."""
        return [n for n, _ in self.spec_ops]

    @property
    def mixes_labels(self) -> bool:
        return bool(self.mixes)

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        labels = torch.arange(images.shape[0], device=images.device)
        return self.augment(images, labels, generator, num_classes=images.shape[0])[0]

    def augment(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, *,
                num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented uint8 images and their targets: ``labels`` as given, or ``[N, num_classes]`` probabilities
        once a mix has run (each image's label weighted by its share of the image)."""
        if not self.spec_ops or images.shape[0] == 0:
            return images, labels
        seed = int(torch.randint(0, SEED_BOUND, (1,), generator=generator, device=generator.device).item())
        padding, mode, flip_p = self.fast
        if self.fast != NO_FAST_PATH:
            n, dev = images.shape[0], images.device
            pad = min(padding, images.shape[-1] - 1, images.shape[-2] - 1)
            offsets = FP.randint(generator, -pad, pad + 1, (2, n), dev)
            flip = FP.coin(generator, n, flip_p, dev)
            images = FP.shifted_crop(images, offsets[0], offsets[1], flip, mode=mode)
        if self.sequence is None and self.counts is None and not self.mixes:
            return images, labels
        devices = [images.device.index or 0] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            x = images.float().div_(255.0)
            if self.counts is not None:
                x = self._per_sample(x)
            elif self.sequence is not None:
                x = self.sequence(x)
            targets = labels
            for mix in self.mixes:
                x, targets = self._mix(mix, x, targets, num_classes)
        return x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8), targets

    def _per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Every image its own count of ops (uniform in ``counts``) and its own choice of that many, in order."""
        assert self.counts is not None
        n, k = x.shape[0], len(self.image_ops)
        count = torch.randint(self.counts[0], self.counts[1] + 1, (n,))
        rank = torch.rand(n, k).argsort(1).argsort(1)  # a random subset of each size: the ranks of random keys
        chosen = (rank < count[:, None]).to(x.device)
        for j, op in enumerate(self.image_ops):
            idx = chosen[:, j].nonzero().flatten()
            if len(idx):
                x = x.index_copy(0, idx, op(x.index_select(0, idx)))
        return x

    @staticmethod
    def _mix(mix: Any, x: torch.Tensor, targets: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One kornia mix over ``x``; its (index, paired index, lambda) rows turn ``targets`` soft."""
        soft = targets if targets.is_floating_point() else F.one_hot(targets, num_classes).float()
        n = x.shape[0]
        out, rows = mix(x, torch.arange(n, device=x.device, dtype=x.dtype))
        rows = rows.view(-1, n, 3)  # MixUp: one (N, 3); CutMix: one (N, 3) per paste
        correct_lambda = bool(getattr(mix, "use_correct_lambda", False))
        for row in rows:
            a, b, lam = row[:, 0].long(), row[:, 1].long(), row[:, 2].float()
            # MixUp weighs the paired image by lambda; CutMix's lambda is the pasted share unless use_correct_lambda
            # (then it is the kept share)
            w = (1.0 - lam if correct_lambda else lam).view(-1, 1)
            soft = (1.0 - w) * soft[a] + w * soft[b]
        return out, soft

    def __repr__(self) -> str:
        return f"Pipeline(img_size={self.img_size}, ops={self.ops})"
