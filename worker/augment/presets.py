"""The augmentation presets: named pipelines of kornia ops, written as a spec would write them.

Each is a function of the image size (crop sizes follow it) and channels (colour ops need three) returning ``{ops: [...], random_apply, per_sample}``;
``vitsweep datasets`` lists their contents. A spec can copy any of them into ``dataset.augment`` and change it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Recipe = dict[str, Any]


def _crop_flip(img_size: int) -> list[dict[str, Any]]:
    """Pad by 4 pixels (reflect) at 32 px, ``img_size // 8`` above that, crop back; flip left-right (p 1/2)."""
    pad = max(4, img_size // 8)
    return [{"RandomCrop": {"size": [img_size, img_size], "padding": pad, "padding_mode": "reflect"}},
            {"RandomHorizontalFlip": {}}]


def _jitter(in_chans: int, brightness: float, contrast: float, saturation: float, hue: float) -> dict[str, float]:
    """ColorJitter's strengths; saturation and hue only for RGB (kornia refuses them on other channel counts)."""
    if in_chans != 3:
        return {"brightness": brightness, "contrast": contrast}
    return {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}


def none(img_size: int, in_chans: int) -> Recipe:
    """The identity: the batch unchanged."""
    return {"ops": []}


def standard(img_size: int, in_chans: int) -> Recipe:
    """The classic CIFAR recipe: random crop of the padded image plus horizontal flip (the fast path)."""
    return {"ops": _crop_flip(img_size)}


def cutout(img_size: int, in_chans: int) -> Recipe:
    """Cutout (DeVries and Taylor, 2017): the standard crop and flip, then a square of a quarter of the area
    (half the side) erased to 0 in every image (kornia's RandomErasing keeps it inside the image)."""
    return {"ops": [*_crop_flip(img_size),
                    {"RandomErasing": {"scale": [0.25, 0.25], "ratio": [1.0, 1.0], "value": 0.0, "p": 1.0}}]}


def colorjitter_flip(img_size: int, in_chans: int) -> Recipe:
    """ColorJitter(0.4, 0.4, 0.4, 0.1) (the SimCLR/timm strengths; saturation and hue on RGB only) and a
    left-right flip with p = 1/2."""
    return {"ops": [{"ColorJitter": _jitter(in_chans, 0.4, 0.4, 0.4, 0.1)}, {"RandomHorizontalFlip": {}}]}


def randomresizedcrop(img_size: int, in_chans: int) -> Recipe:
    """Inception-style crop of 8% to 100% of the area, aspect 3/4 to 4/3, resized back; then a flip."""
    return {"ops": [{"RandomResizedCrop": {"size": [img_size, img_size], "scale": [0.08, 1.0]}},
                    {"RandomHorizontalFlip": {}}]}


def trivialaugment(img_size: int, in_chans: int) -> Recipe:
    """kornia's TrivialAugment (Mueller and Hutter, 2021): one random operation of random strength per image."""
    return {"ops": [{"TrivialAugment": {}}]}


def perceiver(img_size: int, in_chans: int) -> Recipe:
    """Seed 000's Perceiver mix: per image, 1 to 4 distinct ops of this list (in its order): colour jitter 0.2,
    horizontal and vertical flip, rotation 0..180 degrees, affine (rotation 15, translation 20%, scale 0.8..1.2,
    x shear 15), equalise, autocontrast, sharpness and, from 96 px, a random resized crop of scale 0.5..1."""
    ops: list[dict[str, Any]] = [
        {"ColorJitter": _jitter(in_chans, 0.2, 0.2, 0.2, 0.2)},
        {"RandomHorizontalFlip": {"p": 1.0}},
        {"RandomVerticalFlip": {"p": 1.0}},
        {"RandomRotation": {"degrees": [0.0, 180.0], "p": 1.0}},
        {"RandomAffine": {"degrees": 15.0, "translate": [0.2, 0.2], "scale": [0.8, 1.2], "shear": [-15.0, 15.0],
                          "p": 1.0}},
        {"RandomEqualize": {"p": 1.0}},
        {"RandomAutoContrast": {"p": 1.0}},
        {"RandomSharpness": {"sharpness": 1.0, "p": 1.0}},
    ]
    if img_size >= 96:
        ops.append({"RandomResizedCrop": {"size": [img_size, img_size], "scale": [0.5, 1.0]}})
    return {"ops": ops, "random_apply": [1, 4], "per_sample": True}


PRESETS: dict[str, Callable[[int, int], Recipe]] = {
    f.__name__: f for f in (none, standard, cutout, colorjitter_flip, randomresizedcrop, trivialaugment, perceiver)
}
