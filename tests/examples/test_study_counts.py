"""The parameter counts the study reports state, asserted on the models their specs under examples/studies/ build.

Each model is built from a spec's own blocks: the matrix point written into the spec (``matrix.expand`` and
``set_path``, as ``ExperimentSpec.resolve`` writes a trial's values), its ``model`` block validated as the API
validates it, then ``vitmodels.create_model`` with the arguments the worker passes (``worker/training.py``), on
the meta device. A count that stops matching means the spec or the model family no longer builds what the study
ran.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import vitmodels
from server.core.spec.matrix import expand
from server.core.spec.paths import set_path
from server.core.spec.sections import ModelSpec

STUDIES = Path(__file__).resolve().parents[2] / "examples" / "studies"
# The stated counts are of 10-class heads: Fashion-MNIST's and CIFAR-10's classes.
NUM_CLASSES = {"fashion_mnist": 10, "cifar10": 10}
# Parameters torchsummary leaves out (nn.Parameters of the top module, not of a layer): seed 004's summary counts
# neither the position embedding nor the class token.
NOT_IN_SUMMARY = ("pos_embedding", "cls_token")

# Per spec, every point in matrix order: (the report's row, its stated parameter count).
STATED: dict[str, list[tuple[str, int]]] = {
    # Study 001, "Classifying FMNIST": the table's "model params" column, in the table's order.
    "001-fmnist-architecture-table.yaml": [
        ("RN18 (white)", 11_243_466),
        ("ViT (grey)", 2_185_610),
        ("ViT (purple)", 2_185_610),
        ("ViT (not shown)", 2_185_610),
        ("ViT (orange)", 4_294_026),
        ("ViT (yellow)", 4_294_026),
        ("ViT (magenta)", 4_469_178),
        ("ViT (red)", 6_395_274),
        ("ViT (blue)", 2_185_610),
        ("ViT (green)", 8_510_858),
        ("CNN (light green)", 2_002_698),
        ("ViT (dark blue)", 25_453_962),
    ],
    # Study 001's YAML block is the table's magenta row.
    "001-fmnist-vit-trivaug.yaml": [("ViT (magenta)", 4_469_178)],
    # Study 004: the ConvMixer notebooks' torchsummary (hdim 256, depth 10, kernel 5, patch 2).
    "004-cifar10-convmixer-wrapper.yaml": [("ConvMixer_experimentation_1", 741_130)],
    "004-cifar10-convmixer-recipe.yaml": [("ConvMixer_expermentation_2", 741_130)],
}
# Study 004, "ViT with convolution": the layer summary's total, without position embedding and class token; and
# the notebook's count of every parameter.
VIT_CONV_SPEC = "004-cifar10-vit-conv.yaml"
VIT_CONV_SUMMARY = 9_480_202
VIT_CONV_ALL = 9_513_994


def spec_points(filename: str) -> list[dict[str, Any]]:
    """The spec with each of its matrix points written in (one, the spec itself, without a matrix)."""
    raw = yaml.safe_load((STUDIES / filename).read_text())
    matrix = raw.pop("matrix", None)
    points = [point for point, _ in expand(matrix)] if matrix else [{}]
    out = []
    for point in points:
        data = copy.deepcopy(raw)
        for path, value in point.items():
            set_path(data, path, value)
        out.append(data)
    return out


def build(data: dict[str, Any]) -> nn.Module:
    """The trial's model, as the worker builds it, on the meta device."""
    model = ModelSpec.model_validate(data["model"])
    dataset = data["dataset"]
    with torch.device("meta"):
        return vitmodels.create_model(
            model.name,
            num_classes=NUM_CLASSES[dataset["name"]],
            img_size=dataset["img_size"],
            in_chans=dataset.get("in_chans", 3),
            code_size=model.code_size,
            stn=model.stn,
            **model.arch,
        )


def count(model: nn.Module, *, leave_out: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] not in leave_out)


@pytest.mark.parametrize("filename", sorted(STATED))
def test_stated_parameter_counts(filename: str) -> None:
    points = spec_points(filename)
    stated = STATED[filename]
    assert len(points) == len(stated), f"{filename} has {len(points)} points, the report {len(stated)} rows"
    found = [(row, count(build(data))) for (row, _), data in zip(stated, points, strict=True)]
    assert found == stated


def test_conv_only_vit_matches_the_layer_summary() -> None:
    (data,) = spec_points(VIT_CONV_SPEC)
    model = build(data)
    assert count(model, leave_out=NOT_IN_SUMMARY) == VIT_CONV_SUMMARY
    assert count(model) == VIT_CONV_ALL
    # No linear layer in the transformer: only the head is one.
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert linears == ["head"]
