"""Augmentation presets (kornia pipelines): batch contract, determinism under a generator, per-sample randomness."""

from __future__ import annotations

import pytest
import torch

from worker.augment import Augment, build_augment, list_augments, normalize

IMG = 32
RANDOM = [name for name in list_augments() if name != "none"]


def _batch(n: int = 16, c: int = 3, size: int = IMG, seed: int = 0) -> torch.Tensor:
    """Structured images (gradients plus noise), so geometric and colour ops both show."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = torch.stack([xx * 255 / size, yy * 255 / size, (xx + yy) * 127 / size])[:c]
    noise = torch.randint(-40, 40, (n, c, size, size), generator=gen)
    return (base + noise).clamp(0, 255).to(torch.uint8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry() -> None:
    expected = {
        "none",
        "standard",
        "perceiver",
        "trivialaugment",
        "colorjitter_flip",
        "cutout",
        "randomresizedcrop",
    }
    assert expected <= set(list_augments())
    assert list_augments() == sorted(list_augments())
    with pytest.raises(ValueError, match="unknown augment preset 'nope'"):
        build_augment("nope", img_size=IMG)


@pytest.mark.parametrize("name", list_augments())
@pytest.mark.parametrize("chans", [1, 3])
def test_contract(name: str, chans: int) -> None:
    aug = build_augment(name, img_size=IMG, in_chans=chans)
    assert isinstance(aug, Augment)
    images = _batch(c=chans)
    before = images.clone()
    out = aug(images, _gen(0))
    assert out.shape == images.shape and out.dtype == torch.uint8 and out.device == images.device
    assert torch.equal(images, before), "the input batch must not be modified in place"
    assert aug(images[:0], _gen(0)).shape == (0, chans, IMG, IMG)


@pytest.mark.parametrize("name", list_augments())
def test_deterministic_under_generator(name: str) -> None:
    aug, images = build_augment(name, img_size=IMG), _batch()
    assert torch.equal(aug(images, _gen(1)), aug(images, _gen(1)))


@pytest.mark.parametrize("name", RANDOM)
def test_random_presets_change_and_vary(name: str) -> None:
    aug, images = build_augment(name, img_size=IMG), _batch()
    first = aug(images, _gen(1))
    assert not torch.equal(first, images), "a random preset should change a batch of 16"
    assert not torch.equal(first, aug(images, _gen(2))), "another seed should give another result"


@pytest.mark.parametrize("name", RANDOM)
def test_per_sample(name: str) -> None:
    """Copies of one image in one batch are augmented independently."""
    aug = build_augment(name, img_size=IMG)
    images = _batch(n=1).expand(16, -1, -1, -1).contiguous()
    out = aug(images, _gen(3))
    distinct = {tuple(img.flatten().tolist()) for img in out}
    assert len(distinct) >= 4, f"{name}: only {len(distinct)} distinct results among 16 copies"


def test_none_is_identity() -> None:
    images = _batch()
    assert torch.equal(build_augment("none", img_size=IMG)(images, _gen(0)), images)


def test_standard_is_crop_and_flip() -> None:
    """Every output row is a shifted, possibly mirrored, run of input pixels: values are never invented."""
    images = torch.randint(0, 256, (8, 3, IMG, IMG), generator=_gen(0), dtype=torch.uint8)
    out = build_augment("standard", img_size=IMG)(images, _gen(5))
    for img, res in zip(images, out, strict=True):
        assert set(res.unique().tolist()) <= set(img.unique().tolist())
    # the centre 24 x 24 (padding 4) is always a plain crop of the image: find it
    centre = out[:, :, 4:-4, 4:-4]
    for img, c in zip(images, centre, strict=True):
        found = any(
            torch.equal(c, img[:, y : y + 24, x : x + 24])
            or torch.equal(c, img[:, y : y + 24, x : x + 24].flip(-1))
            for y in range(9)
            for x in range(9)
        )
        assert found


def test_normalize() -> None:
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(images, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert out.dtype == torch.float32
    assert torch.allclose(out[:, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]).expand(2, 3))
    with pytest.raises(ValueError, match="one mean and std per channel"):
        normalize(images, (0.5,), (0.25,))


@pytest.mark.parametrize("name", ["perceiver", "randomresizedcrop", "trivialaugment", "standard"])
def test_large_images(name: str) -> None:
    """At 96 px the perceiver preset adds its random resized crop; every preset handles the size."""
    aug = build_augment(name, img_size=96)
    images = _batch(n=8, size=96)
    out = aug(images, _gen(0))
    assert out.shape == images.shape and not torch.equal(out, images)
    if name == "perceiver":
        assert "RandomResizedCrop" in aug.ops and "RandomResizedCrop" not in build_augment(name, img_size=32).ops


def test_cutout_zeroes_a_square_per_image() -> None:
    images = torch.randint(1, 256, (32, 3, IMG, IMG), generator=_gen(0), dtype=torch.uint8)
    out = build_augment("cutout", img_size=IMG)(images, _gen(1))
    zero = (out == 0).all(1)  # [N, H, W]
    areas = zero.sum((1, 2))
    assert bool((areas >= 8 * 8).all()) and bool((areas <= 16 * 16).all()), areas
    rows, cols = zero.any(2), zero.any(1)
    assert bool((zero.sum((1, 2)) == rows.sum(1) * cols.sum(1)).all()), "the zeroed region is one rectangle"
    assert len({tuple(r.nonzero().flatten().tolist()) for r in rows}) > 4, "squares sit at different places"


def test_standard_zero_padding() -> None:
    """kornia's default padding_mode (constant 0) on the fast path pads with zeros; the preset reflects."""
    images = torch.full((16, 3, IMG, IMG), 200, dtype=torch.uint8)
    zeros = build_augment([{"RandomCrop": {"size": [IMG, IMG], "padding": 4}}, {"RandomHorizontalFlip": {}}],
                          img_size=IMG)
    assert zeros.fast[0] == 4, "the crop-and-flip pipeline takes the fast path"
    out = zeros(images, _gen(0))
    assert set(out.unique().tolist()) <= {0, 200} and bool((out == 0).any())
    reflected = build_augment("standard", img_size=IMG)(images, _gen(0))
    assert bool((reflected == 200).all())


def test_randomresizedcrop_full_scale_is_flip_or_identity() -> None:
    images = _batch()
    crop = {"RandomResizedCrop": {"size": [IMG, IMG], "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}}
    out = build_augment([crop, {"RandomHorizontalFlip": {}}], img_size=IMG)(images, _gen(0))
    for img, res in zip(images, out, strict=True):
        assert torch.equal(res, img) or torch.equal(res, img.flip(-1))


def test_colorjitter_keeps_gray_gray() -> None:
    images = _batch(c=1)
    out = build_augment("colorjitter_flip", img_size=IMG, in_chans=1)(images, _gen(0))
    assert out.shape == images.shape and not torch.equal(out, images)


def test_trivialaugment_spreads_over_operations() -> None:
    """About 1/14 of the images draw the identity; most are changed, each by one operation."""
    images = _batch(n=280)
    out = build_augment("trivialaugment", img_size=IMG)(images, _gen(0))
    same = sum(torch.equal(a, b) for a, b in zip(images, out, strict=True))
    assert 5 <= same <= 60, same


def test_generator_drives_everything() -> None:
    """Draws come from the generator only: the global RNG state neither matters nor moves."""
    images = _batch()
    for name in RANDOM:
        aug = build_augment(name, img_size=IMG)
        torch.manual_seed(0)
        first = aug(images, _gen(4))
        state = torch.random.get_rng_state()
        torch.manual_seed(123)
        assert torch.equal(first, aug(images, _gen(4))), name
        torch.random.set_rng_state(state)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list_augments())
def test_cuda(name: str) -> None:
    aug = build_augment(name, img_size=IMG)
    images = _batch().cuda()
    gen = torch.Generator(device="cuda")
    first = aug(images, gen.manual_seed(7))
    assert first.device == images.device and first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, aug(images, gen.manual_seed(7)))
    cpu_gen_out = aug(images, _gen(7))  # a CPU generator works too: draws are moved to the images' device
    assert cpu_gen_out.device == images.device
