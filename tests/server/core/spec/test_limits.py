"""Document limits: what no spec needs is refused before validation, with the path of the offending value."""

from __future__ import annotations

import pytest

from server.core.exceptions import SpecError
from server.core.spec.limits import (
    MAX_ARCH_INT,
    MAX_NODES,
    check_arch_ints,
    check_document,
    check_mapping,
    check_scalar,
    check_value,
    short_repr,
)


def test_a_plain_spec_passes() -> None:
    check_document({"name": "x", "train": {"lr": 1e-3, "seed": 0}, "matrix": {"train.lr": [0.1, 0.01]}})


@pytest.mark.parametrize(
    ("document", "loc", "fragment"),
    [
        ({"train": {"lr": float("nan")}}, ("train", "lr"), "finite"),
        ({"train": {"seed": 2**64}}, ("train", "seed"), "64 bits"),
        ({"description": "a\x00b"}, ("description",), "NUL"),
        ({"description": "x" * 5000}, ("description",), "at most 4096"),
        ({"dataset": {1: 2}}, ("dataset",), "keys must be strings"),
        ({"when": __import__("datetime").date(2020, 1, 1)}, ("when",), "date"),
        ({"name": "a\ud800"}, ("name",), "lone surrogate '\\ud800' at position 1"),
        ({"dataset": {"\udfff": 1}}, ("dataset",), "lone surrogate"),
    ],
)
def test_refused_values_name_their_path(document: dict, loc: tuple, fragment: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_document(document)
    assert exc.value.loc == loc and fragment in exc.value.msg


def test_node_budget_counts_every_use_of_a_shared_value() -> None:
    shared = list(range(100))  # what a YAML alias expands to: the same list, referenced many times
    with pytest.raises(SpecError, match=f"more than {MAX_NODES} values"):
        check_document({"k": [shared] * (MAX_NODES // 100 + 1)})


def test_nesting_is_bounded() -> None:
    deep: dict = {}
    node = deep
    for _ in range(20):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(SpecError, match="nested more than 16"):
        check_document(deep)


def test_free_form_mappings_take_identifier_keys_and_bounded_values() -> None:
    assert check_mapping({"depth": 4, "widths": [1, 2]}, "arch") == {"depth": 4, "widths": [1, 2]}
    for bad, fragment in (({"not valid": 1}, "identifiers"), ({f"k{i}": 1 for i in range(65)}, "at most 64"),
                          ({"k": list(range(257))}, "at most 256"), ({"k": [[[[[[1]]]]]]}, "nested")):
        with pytest.raises(ValueError, match=fragment):
            check_mapping(bad, "arch")
    with pytest.raises(ValueError, match=r"choices\[0\]: strings here are at most 256"):
        check_value("x" * 300, "choices[0]")
    check_scalar(None)
    check_scalar(True)


def test_short_repr_cuts_long_input() -> None:
    assert short_repr("x" * 500).endswith("...") and len(short_repr("x" * 500)) == 80
    assert short_repr(3) == "3"


def test_architecture_integers_are_bounded() -> None:
    check_arch_ints({"depths": [2, 2, 6], "num_layers": MAX_ARCH_INT, "ratio": 4.0, "qkv_bias": True}, "arch")
    for bad, where in (({"num_layers": MAX_ARCH_INT + 1}, "arch.num_layers"), ({"depths": [2, 2**53]}, r"arch.depths\[1\]"),
                       ({"block": {"width": -(2**40)}}, "arch.block.width")):
        with pytest.raises(ValueError, match=f"{where} must be at most {MAX_ARCH_INT}"):
            check_arch_ints(bad, "arch")
