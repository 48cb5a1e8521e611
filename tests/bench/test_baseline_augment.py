"""The hand-written ops ``bench/augment.py`` measures kornia against still agree with torchvision's kernels, so
the baseline column is the old presets' real work."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is scripts, not an installed package

from tests.worker.test_augment import IMG, _batch


def test_functional_matches_torchvision() -> None:
    import torchvision.transforms.v2.functional as TF

    from bench.baseline import functional as AF

    x = _batch(n=4)
    n, xf = 4, x.float()

    def full(value: float) -> torch.Tensor:
        return torch.full((n,), value)

    def close(a: torch.Tensor, b: torch.Tensor, tol: int = 1) -> bool:
        return int((a.int() - b.int()).abs().max()) <= tol

    assert close(AF.to_uint8(AF.adjust_hue(xf, full(0.2))), TF.adjust_hue(x, 0.2))
    assert close(AF.to_uint8(AF.adjust_saturation(xf, full(0.5))), TF.adjust_saturation(x, 0.5))
    assert close(AF.to_uint8(AF.adjust_contrast(xf, full(1.5))), TF.adjust_contrast(x, 1.5))
    assert close(AF.to_uint8(AF.adjust_brightness(xf, full(1.3))), TF.adjust_brightness(x, 1.3))
    assert torch.equal(AF.sharpness(x, full(2.0)), TF.adjust_sharpness(x, 2.0))
    assert torch.equal(AF.posterize(x, full(3).long()), TF.posterize(x, 3))
    assert torch.equal(AF.solarize(x, full(100.0)), TF.solarize(x, 100))
    zeros, ones, zeros2 = torch.zeros(n), torch.ones(n), torch.zeros(n, 2)
    assert torch.equal(AF.affine(x, full(30.0), zeros2, ones, zeros2, mode="nearest"), TF.rotate(x, 30.0))
    shear = torch.tensor([[12.0, 0.0]] * n)
    expected = TF.affine(x, angle=0.0, translate=[3, -2], scale=1.0, shear=[12.0, 0.0])
    assert torch.equal(
        AF.affine(x, zeros, torch.tensor([[3.0, -2.0]] * n), ones, shear, mode="nearest"), expected
    )
    box = torch.tensor([[4.0, 6.0, 16.0, 20.0]] * n)
    cropped = TF.resized_crop(x, 4, 6, 16, 20, [IMG, IMG], antialias=False)
    assert close(AF.resized_crop(x, box)[..., 1:-1, 1:-1], cropped[..., 1:-1, 1:-1])
