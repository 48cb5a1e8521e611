"""Dotted paths into a spec, and the slug that names a grid point."""

from __future__ import annotations

import pytest

from server.core.spec.paths import check_path_syntax, leaf, set_path, slug
from server.core.spec.sections import check_path


def test_set_path_creates_free_form_levels_and_copies_values() -> None:
    data: dict = {"model": {"name": "vit", "arch": {}}, "train": {"lr": 0.1}}
    value = [1, 2]
    set_path(data, "model.arch.depths", value)
    set_path(data, "train.lr", 0.01)
    set_path(data, "dataset.options.num_samples", 8)
    value.append(3)
    assert data == {"model": {"name": "vit", "arch": {"depths": [1, 2]}}, "train": {"lr": 0.01},
                    "dataset": {"options": {"num_samples": 8}}}
    with pytest.raises(ValueError, match="not a section"):
        set_path(data, "train.lr.x", 1)


@pytest.mark.parametrize("path", ["train.lr", "model.arch.num_layers", "model.arch_by_model.vit.depth"])
def test_valid_paths(path: str) -> None:
    check_path_syntax(path)
    check_path(path)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("lr", "dotted identifiers"),
        ("train.lr; drop table", "dotted identifiers"),
        ("optim.lr", "must start with one of dataset, model, train"),
        ("train.nope", "has no field 'nope'"),
        ("train.lr.x", "has no sub-fields"),
        ("model.arch", "name a key inside model.arch"),
        ("model.arch_by_model.vit", "name a model and one of its keywords"),
        ("model.arch_by_model.vitt.depth", "not a registered model"),
        ("model.arch." + "k" * 300, "at most 200"),
    ],
)
def test_invalid_paths_say_why(path: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_path(path)


def test_slug_names_a_point_by_its_values() -> None:
    assert slug({"model.arch.num_layers": 4, "train.lr": 0.001}) == "num_layers-4_lr-0.001"
    # Leaves that clash keep their whole path; strings stay bare; lists are JSON.
    assert slug({"model.arch.depth": 2, "model.arch_by_model.vit.depth": 3}) == "model-arch-depth-2_model-arch_by_model-vit-depth-3"
    assert slug({"model.name": "vit", "model.arch.depths": [2, 2]}) == "name-vit_depths-2,2"
    assert leaf("model.arch.num_layers") == "num_layers"
    assert len(slug({f"train.k{i}": "x" * 50 for i in range(10)})) == 200
