"""Paths a spec names under the data directory (``model.pretrained``, ``dataset.options.path``): one rule.

A path from a spec must stay inside the directory it is resolved against: relative, no ``~``, no drive or
root in either separator style, no ``..`` component, no NUL. The check is lexical, made on the spec's string
and again on the joined path: the user controls the string, the operator controls the data directory, so
symlinks the operator put inside it may point anywhere (a shared datasets volume, say). The API checks the
string at submission (:func:`check_relative`); the worker checks again when it joins it to its own data
directory (:func:`confine`), since a spec may have been stored before a rule existed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PureWindowsPath
from typing import Any

from server.core.exceptions import PathEscapeError


def check_relative(value: Any, what: str) -> str:
    """``value`` as a path relative to the data directory that cannot leave it; returned unchanged.

    Raises:
        PathEscapeError: naming ``what`` (e.g. ``model.pretrained``) and the value.
    """
    if not isinstance(value, str) or not value.strip():
        raise PathEscapeError(f"{what} must be a non-empty path relative to the data directory, got {value!r}")
    if "\x00" in value:
        raise PathEscapeError(f"{what} must not contain NUL characters")
    windows = PureWindowsPath(value)  # sees both separators: catches /x, \\x, C:x and //host/share
    if windows.drive or windows.root or value.startswith("~"):
        raise PathEscapeError(f"{what} must be relative to the data directory, got absolute path {value!r}")
    if ".." in re.split(r"[/\\]", value):
        raise PathEscapeError(f"{what} must stay inside the data directory; '..' is not allowed, got {value!r}")
    return value


def confine(root: Path, relative: Any, what: str) -> Path:
    """``root / relative``, normalised, after :func:`check_relative`; the joined path is checked to lie under
    ``root`` as well (lexically: symlinks inside ``root`` are the operator's)."""
    check_relative(relative, what)
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.join(base, relative))
    if os.path.commonpath([base, target]) != base:
        raise PathEscapeError(f"{what} must stay inside the data directory {root}, got {relative!r}")
    return Path(target)
