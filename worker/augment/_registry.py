"""The augmentation registry: presets register by name; specs resolve names through :func:`build_augment`."""

from __future__ import annotations

from typing import TypeVar

from worker.augment.base import Augment

_PRESETS: dict[str, type[Augment]] = {}

A = TypeVar("A", bound=type[Augment])


def register_augment(cls: A) -> A:
    """Class decorator: make an :class:`Augment` buildable by its ``name``."""
    if cls.name in _PRESETS and _PRESETS[cls.name] is not cls:
        raise ValueError(f"augment {cls.name!r} is already registered by {_PRESETS[cls.name].__qualname__}")
    _PRESETS[cls.name] = cls
    return cls


def list_augments() -> list[str]:
    """Registered preset names, sorted."""
    return sorted(_PRESETS)


def build_augment(name: str, *, img_size: int) -> Augment:
    """The preset ``name`` for images of ``img_size x img_size``."""
    try:
        cls = _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown augment preset {name!r}; valid: {', '.join(list_augments())}") from None
    return cls(img_size=img_size)
