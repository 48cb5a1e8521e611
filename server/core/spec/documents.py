"""Reading a spec's text, JSON or YAML, into plain values, remembering the keys a mapping gave twice.

Both parsers let the last of two equal keys win without a word, so ``lr: 0.1`` written twice would silently run
with the second. Each mapping comes back as a :class:`ParsedMapping` holding its repeated keys, and
:func:`~server.core.spec.limits.check_document` refuses them with their path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class ParsedMapping(dict[str, Any]):
    """A mapping as parsed, with ``duplicates``: the keys its text gives more than once, in order."""

    duplicates: tuple[Any, ...] = ()


def load_json(text: str) -> Any:
    """``json.loads`` with every object a :class:`ParsedMapping`.

    Raises:
        ValueError: malformed JSON (or an integer of more digits than Python converts); RecursionError: absurd
            nesting.
    """
    return json.loads(text, object_pairs_hook=_json_mapping)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` (no Python tags, nothing executed) with every mapping a :class:`ParsedMapping`.

    Raises:
        yaml.YAMLError: malformed YAML; ValueError or RecursionError: what PyYAML lets through for huge
            integers and absurd nesting.
    """
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _json_mapping(pairs: list[tuple[str, Any]]) -> ParsedMapping:
    mapping = ParsedMapping(pairs)
    if len(mapping) < len(pairs):
        mapping.duplicates = _repeated(key for key, _ in pairs)
    return mapping


def _repeated(keys: Iterator[Any]) -> tuple[Any, ...]:
    seen: set[Any] = set()
    repeated: list[Any] = []
    for key in keys:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    return tuple(repeated)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings record their repeated keys. They are found on the node graph before anything
    is constructed: constructing a mapping merges ``<<: *anchor`` keys into it, and a key that overrides a
    merged one is YAML's way of overriding, not a repetition."""

    _duplicates: dict[int, tuple[Any, ...]]

    def construct_document(self, node: yaml.Node) -> Any:
        self._duplicates = _node_duplicates(node)
        return super().construct_document(node)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Iterator[ParsedMapping]:
    mapping = ParsedMapping()
    yield mapping  # as SafeConstructor does: an alias inside the mapping may refer to it
    mapping.update(loader.construct_mapping(node))  # type: ignore[arg-type]  # keys checked by check_document
    mapping.duplicates = loader._duplicates.get(id(node), ())


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _node_duplicates(root: yaml.Node) -> dict[int, tuple[Any, ...]]:
    """``id(node) -> repeated keys`` for every mapping node of the document that repeats a (scalar) key; each
    node is visited once, however many aliases point at it."""
    found: dict[int, tuple[Any, ...]] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = [(k.tag, k.value) for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.tag != MERGE_TAG]
            repeated = _repeated(iter(keys))
            if repeated:
                found[id(node)] = tuple(value for _, value in repeated)
            stack.extend(child for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return found
