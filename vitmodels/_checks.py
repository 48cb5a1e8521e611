"""Argument checks shared by the families; each raises :class:`InvalidArchError` naming the value at fault.

They run before any upstream module is built, so a bad spec fails fast and with a message a user can act on
instead of an assertion deep inside torchvision or timm.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .exceptions import InvalidArchError

__all__ = [
    "check_bool",
    "check_choice",
    "check_divides",
    "check_positive",
    "check_probability",
    "check_sequence",
]


def check_positive(**values: Any) -> None:
    """Every value is an int >= 1 (bools are refused: ``True`` is not a width)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArchError(f"{name} must be a positive integer, got {name}={value!r}")


def check_bool(**values: Any) -> None:
    """Every value is a bool: a YAML ``"no"`` string must not switch a feature on."""
    for name, value in values.items():
        if not isinstance(value, bool):
            raise InvalidArchError(f"{name} must be true or false, got {name}={value!r}")


def check_probability(**values: Any) -> None:
    """Every value is a float in [0, 1), as dropout rates must be."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise InvalidArchError(f"{name} must be a probability in [0, 1), got {name}={value!r}")


def check_divides(divisor_name: str, divisor: int, name: str, value: int, *, what: str | None = None) -> None:
    """``divisor`` divides ``value``; ``what`` overrides the noun used for ``value`` in the message."""
    if value % divisor:
        target = what or name
        raise InvalidArchError(
            f"{divisor_name} must divide {target}, got {divisor_name}={divisor} for {name}={value}"
        )


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise InvalidArchError(f"{name} must be one of {choices}, got {name}={value!r}")


def check_sequence(name: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    """``value`` is a list or tuple of positive ints (of ``length`` items if given); returned as a tuple."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidArchError(f"{name} must be a list of positive integers, got {name}={value!r}")
    items = tuple(value)
    if length is not None and len(items) != length:
        raise InvalidArchError(f"{name} must have {length} entries, got {len(items)} in {name}={value!r}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise InvalidArchError(f"{name} must be a list of positive integers, got {name}={value!r}")
    return items
