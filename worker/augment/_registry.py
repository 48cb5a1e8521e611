"""Presets by name, and :func:`build_augment`, which makes a preset or a spec's own kornia pipeline."""

from __future__ import annotations

from typing import Any

from worker.augment.pipeline import Pipeline
from worker.augment.presets import PRESETS, Recipe


def list_augments() -> list[str]:
    """Registered preset names, sorted."""
    return sorted(PRESETS)


def preset_recipe(name: str, *, img_size: int, in_chans: int = 3) -> Recipe:
    """The ops (and ``random_apply``) preset ``name`` runs on ``in_chans x img_size x img_size`` images."""
    try:
        return PRESETS[name](img_size, in_chans)
    except KeyError:
        raise ValueError(f"unknown augment preset {name!r}; valid: {', '.join(list_augments())}") from None


def build_augment(augment: Any, *, img_size: int, in_chans: int = 3) -> Pipeline:
    """A preset name, a list of kornia ops, or ``{ops, random_apply}`` (a spec's ``dataset.augment``) as a
    :class:`Pipeline` for images of ``in_chans x img_size x img_size``."""
    if isinstance(augment, str):
        recipe = preset_recipe(augment, img_size=img_size, in_chans=in_chans)
        pipeline = Pipeline(img_size=img_size, ops=recipe["ops"], random_apply=recipe.get("random_apply"),
                            per_sample=recipe.get("per_sample", False))
        pipeline.name = augment
        return pipeline
    if isinstance(augment, list):
        return Pipeline(img_size=img_size, ops=augment)
    ops = augment["ops"] if isinstance(augment, dict) else augment.ops
    random_apply = augment.get("random_apply") if isinstance(augment, dict) else augment.random_apply
    return Pipeline(img_size=img_size, ops=ops, random_apply=random_apply)
