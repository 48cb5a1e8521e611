"""Reading a spec's text: a key given twice in one mapping is refused with its path, in JSON and in YAML alike;
YAML's merge keys (``<<: *base``) still override as YAML means them to."""

from __future__ import annotations

import pytest

from server.core.exceptions import SpecError
from server.core.spec import check_document, load_json, load_yaml


@pytest.mark.parametrize(
    ("text", "load", "loc", "key"),
    [
        ('{"name": "a", "name": "b"}', load_json, ("name",), "'name'"),
        ('{"train": {"lr": 0.1, "seed": 1, "lr": 0.2}}', load_json, ("train", "lr"), "'lr'"),
        ('{"matrix": {"train.lr": [0.1], "train.lr": [0.2]}}', load_json, ("matrix", "train.lr"), "'train.lr'"),
        ("name: a\nname: b\n", load_yaml, ("name",), "'name'"),
        ("train:\n  lr: 0.1\n  'lr': 0.2\n", load_yaml, ("train", "lr"), "'lr'"),
        ("search:\n  space:\n    train.lr: {type: float}\n    train.lr: {type: int}\n", load_yaml,
         ("search", "space", "train.lr"), "'train.lr'"),
        ("matrix:\n  model.arch.depths: [[1, 2], {a: 1, a: 2}]\n", load_yaml, ("matrix", "model.arch.depths", 1, "a"), "'a'"),
    ],
)
def test_a_repeated_key_is_refused_with_its_path(text: str, load: object, loc: tuple, key: str) -> None:
    data = load(text)  # type: ignore[operator]
    with pytest.raises(SpecError) as exc:
        check_document(data)
    assert exc.value.loc == loc and f"duplicate key {key}" in exc.value.msg, (exc.value.loc, exc.value.msg)


def test_yaml_merge_keys_override_without_being_repeats() -> None:
    text = "defaults: &d {lr: 0.1, seed: 1}\ntrain:\n  <<: *d\n  lr: 0.2\nother:\n  <<: *d\n"
    data = load_yaml(text)
    check_document(data)
    assert data["train"] == {"lr": 0.2, "seed": 1} and data["other"] == {"lr": 0.1, "seed": 1}


def test_values_are_plain_after_parsing() -> None:
    for data in (load_json('{"a": {"b": [1, {"c": 2}]}}'), load_yaml("a: {b: [1, {c: 2}]}")):
        assert data == {"a": {"b": [1, {"c": 2}]}}
        check_document(data)


def test_a_yaml_alias_used_many_times_is_walked_once() -> None:
    text = "a0: &a0 {x: 1, x: 2}\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7))
    data = load_yaml(text)  # a million uses of one mapping: the repeated key is found without expanding them
    with pytest.raises(SpecError) as exc:
        check_document(data)
    assert exc.value.loc == ("a0", "x")
