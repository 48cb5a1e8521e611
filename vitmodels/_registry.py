"""Model registry after ``timm/models/_registry.py``: entry points register themselves by name.

An entry point is a function ``fn(*, num_classes, img_size, in_chans, code_size, ...) -> nn.Module`` whose
keyword-only parameters after the common four are the architecture keywords, with their defaults. The registry
reads them from the signature, so the accepted keywords and their defaults live in exactly one place. An entry
point that also takes ``**arch`` (timm-backed ones pass the rest to the upstream class) checks those itself.
"""

from __future__ import annotations

import fnmatch
import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from .exceptions import UnknownModelError

__all__ = [
    "COMMON_ARGS",
    "TIMM_PREFIX",
    "accepts_extra_arch",
    "arch_defaults",
    "is_model",
    "list_models",
    "model_entrypoint",
    "model_family",
    "register_model",
]

F = TypeVar("F", bound=Callable[..., Any])

TIMM_PREFIX = "timm:"
# Arguments every entry point takes; everything else in its signature is an architecture keyword.
COMMON_ARGS = ("num_classes", "img_size", "in_chans", "code_size")

_model_entrypoints: dict[str, Callable[..., Any]] = {}
_model_to_family: dict[str, str] = {}


def register_model(fn: F) -> F:
    """Register ``fn`` under its ``__name__``; its module's last dotted part is the model's family."""
    name = fn.__name__
    if name in _model_entrypoints and _model_entrypoints[name] is not fn:
        # As timm: the later registration wins (a reloaded module, a test's stand-in), but say so.
        warnings.warn(
            f"overwriting model {name!r} of {_model_entrypoints[name].__module__} with {fn.__module__}.{name}",
            stacklevel=2,
        )
    missing = [a for a in COMMON_ARGS if a not in inspect.signature(fn).parameters]
    if missing:
        raise TypeError(f"entry point {fn.__module__}.{name} must take {', '.join(missing)}")
    _model_entrypoints[name] = fn
    _model_to_family[name] = fn.__module__.rsplit(".", 1)[-1]
    mod = sys.modules[fn.__module__]
    exported = getattr(mod, "__all__", None)
    if isinstance(exported, list) and name not in exported:
        exported.append(name)
    return fn


def list_models(filter: str = "") -> list[str]:
    """Registered model names, sorted; ``filter`` is an optional wildcard pattern such as ``"vit*"``.

    ``timm:<name>`` models are open-ended and not listed.
    """
    names = sorted(_model_entrypoints)
    return fnmatch.filter(names, filter) if filter else names


def is_model(name: str) -> bool:
    """True for a registered name, and for ``timm:<name>`` where timm knows ``<name>``."""
    if name.startswith(TIMM_PREFIX):
        import timm

        return timm.is_model(name[len(TIMM_PREFIX) :])
    return name in _model_entrypoints


def model_entrypoint(name: str) -> Callable[..., Any]:
    """The entry point registered as ``name``.

    Raises:
        UnknownModelError: listing the valid names.
    """
    try:
        return _model_entrypoints[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; valid: {', '.join(list_models())}, or timm:<name>"
        ) from None


def model_family(name: str) -> str:
    """The family (defining module) of a registered model, e.g. ``"swin"``."""
    model_entrypoint(name)
    return _model_to_family[name]


def arch_defaults(name: str) -> dict[str, Any]:
    """The architecture keywords ``name`` accepts, with their defaults (``None``: chosen from the size)."""
    params = inspect.signature(model_entrypoint(name)).parameters
    return {
        key: p.default
        for key, p in params.items()
        if key not in COMMON_ARGS and p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def accepts_extra_arch(name: str) -> bool:
    """Whether ``name``'s entry point takes ``**arch`` beyond its named keywords (and checks them itself)."""
    params = inspect.signature(model_entrypoint(name)).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
