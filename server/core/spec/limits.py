"""Document limits: what no spec needs, refused before a spec is validated.

A spec arrives from the network. Before pydantic sees it, :func:`check_document` bounds the whole document
(values, nesting, number sizes, string lengths, JSON types only); the sections then bound each free-form
mapping (``arch``, ``options``, ``sampler_options``) with :func:`check_mapping`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from server.core.exceptions import SpecError
from server.core.spec.documents import ParsedMapping

MAX_TRIALS = 10_000
MAX_EPOCHS = 10_000
MAX_LIST = 256
MAX_STR = 256
MAX_TEXT = 4096  # the longest string anywhere in a spec (the description)
MAX_KEYS = 64  # entries of one free-form mapping (arch, options, sampler_options, ...)
MAX_DEPTH = 4  # nesting of values inside a free-form mapping or a list of choices
MAX_NODES = 20_000  # values in the whole document: YAML aliases cannot blow a small body up
MAX_NESTING = 16  # levels of the whole document
MAX_INT = 2**63 - 1
# Architecture integers (widths, depths, heads, patch sizes) above this are no model a worker can train; refused
# before anything is built, so ``num_layers: 2**53`` costs nothing. Lists of them (``depths``) are bounded alike.
MAX_ARCH_INT = 65_536
# Parameters of one model: weights, gradients and Adam's two moments take 16 bytes a parameter, so 10**10 is
# 160 GB, more than any single device holds. A model built on the meta device with more is refused.
MAX_PARAM_COUNT = 10**10
KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages quote user input without echoing a novel."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_document(data: Any) -> None:
    """Refuse what no spec needs before validating it: more than ``MAX_NODES`` values (counting every use of a
    YAML alias), deep nesting, keys given twice in one mapping (as :mod:`~server.core.spec.documents` parses
    them), non-finite numbers, integers beyond 64 bits, NUL characters, lone surrogates, long strings, and any
    type JSON does not have (YAML dates, binary, sets).

    Raises:
        SpecError: with the path of the first offending value.
    """
    budget = [MAX_NODES]

    def walk(value: Any, loc: tuple[str | int, ...]) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise SpecError((), f"the spec holds more than {MAX_NODES} values; no spec needs that many")
        if len(loc) > MAX_NESTING:
            raise SpecError(loc[:MAX_NESTING], f"the spec is nested more than {MAX_NESTING} levels deep")
        if isinstance(value, dict):
            if isinstance(value, ParsedMapping) and value.duplicates:
                key = value.duplicates[0]
                where = ".".join(map(str, loc)) or "the spec"
                raise SpecError((*loc, key), f"duplicate key {short_repr(key)}: {where} gives it more than once; "
                                "give each key once (a parser would silently keep the last)")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SpecError(loc, f"mapping keys must be strings, got {type(key).__name__} {short_repr(key)}")
                walk(key, loc)
                walk(item, (*loc, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*loc, i))
        else:
            try:
                check_scalar(value, MAX_TEXT)
            except ValueError as exc:
                raise SpecError(loc, str(exc)) from None

    walk(data, ())


def check_scalar(value: Any, max_len: int = MAX_STR) -> None:
    """A JSON scalar of sane size: null, bool, 64-bit int, finite float, or a short string without NUL."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError(f"integers must fit in 64 bits, got {short_repr(value)}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"numbers must be finite, got {value}")
    elif isinstance(value, str):
        if len(value) > max_len:
            raise ValueError(f"strings here are at most {max_len} characters, got {len(value)}")
        if "\x00" in value:
            raise ValueError("strings must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON's "\ud800": a lone surrogate is no character
            raise ValueError(
                f"strings must be valid Unicode, got a lone surrogate {value[exc.start]!r} at position {exc.start}"
            ) from None
    else:
        raise ValueError(
            f"values must be strings, numbers, booleans, null, lists or mappings, got {type(value).__name__}"
        )


def check_value(value: Any, where: str, depth: int = 0) -> Any:
    """A value of a free-form mapping or list: JSON types only, at most ``MAX_DEPTH`` levels, ``MAX_LIST``
    items per list, ``MAX_KEYS`` identifier keys per mapping, strings of at most ``MAX_STR`` characters."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, dict):
        check_mapping(value, where, depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ValueError(f"{where} has {len(value)} items, at most {MAX_LIST}")
        for i, item in enumerate(value):
            check_value(item, f"{where}[{i}]", depth + 1)
    else:
        try:
            check_scalar(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return value


def check_mapping(value: dict[str, Any], where: str, depth: int = 0) -> dict[str, Any]:
    """A free-form mapping (``arch``, ``options``, ``sampler_options``, ...): its keys name keyword arguments."""
    if len(value) > MAX_KEYS:
        raise ValueError(f"{where} has {len(value)} entries, at most {MAX_KEYS}")
    for key, item in value.items():
        if not isinstance(key, str) or len(key) > 64 or not KEY_PATTERN.match(key):
            raise ValueError(f"{where} keys must be identifiers of at most 64 characters, got {short_repr(key)}")
        check_value(item, f"{where}.{key}", depth)
    return value


def check_arch_ints(value: Any, where: str) -> None:
    """Integers of an architecture mapping (at any depth) are at most ``MAX_ARCH_INT``: a width or depth beyond
    that only makes a model too large to build, let alone train."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_arch_ints(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_arch_ints(item, f"{where}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ARCH_INT:
        raise ValueError(
            f"{where} must be at most {MAX_ARCH_INT} in size, got {short_repr(value)}: no architecture a worker can "
            "train has a width, depth or count that large"
        )
