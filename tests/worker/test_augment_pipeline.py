"""kornia pipelines as trials run them: seeded from the trial's generator (same seed, same images; the stream
resumes from the generator's state; the global RNG untouched), kornia's per-batch random_apply against the
perceiver preset's per-image choice, the fast path's equivalence, and MixUp/CutMix soft targets."""

from __future__ import annotations

import pytest
import torch

from worker.augment import build_augment
from worker.engine.losses import build_loss, hard_labels

IMG = 16
PIPELINE = {"ops": [{"RandomCrop": {"size": [IMG, IMG], "padding": 2}}, {"RandomHorizontalFlip": {}},
                    {"RandomAffine": {"degrees": 20.0, "p": 0.7}}, {"ColorJitter": {"brightness": 0.3, "p": 0.5}},
                    {"RandomErasing": {"scale": [0.1, 0.2], "p": 0.5}}],
            "random_apply": [1, 4]}


def _images(n: int = 32, seed: int = 0, c: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, IMG, IMG), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("augment", [PIPELINE, PIPELINE["ops"], [{"TrivialAugment": {}}], [{"RandAugment": {"n": 2, "m": 9}}]],
                         ids=["random_apply", "sequence", "trivialaugment", "randaugment"])
def test_one_seed_one_stream_and_the_global_rng_untouched(augment: object) -> None:
    aug, images = build_augment(augment, img_size=IMG), _images()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = _gen(7), _gen(7)
    first = [aug(images, a) for _ in range(3)]
    assert torch.equal(torch.random.get_rng_state(), before), "kornia's draws must not move the global stream"
    torch.manual_seed(999)  # nor does the global state change what the trial's generator gives
    assert all(torch.equal(x, aug(images, b)) for x in first)
    assert not torch.equal(first[0], first[1]), "the stream moves on from batch to batch"
    assert not torch.equal(first[0], aug(images, _gen(8)))


def test_resuming_the_generator_resumes_the_stream() -> None:
    """What a checkpoint keeps (the generator's state) is all the next batches depend on."""
    aug, images = build_augment(PIPELINE, img_size=IMG), _images()
    gen = _gen(3)
    aug(images, gen)
    saved = gen.get_state()
    expected = [aug(images, gen) for _ in range(2)]
    restored = torch.Generator()
    restored.set_state(saved)
    assert all(torch.equal(x, aug(images, restored)) for x in expected)


def test_random_apply_is_kornias_per_batch_and_the_perceiver_preset_per_image() -> None:
    """kornia's random_apply draws which ops once per call: with one of two flips (p 1) every image of a batch
    gets the same one. The perceiver preset draws 1 to 4 ops for every image."""
    flips = {"ops": [{"RandomHorizontalFlip": {"p": 1.0}}, {"RandomVerticalFlip": {"p": 1.0}}], "random_apply": 1}
    aug, images = build_augment(flips, img_size=IMG), _images(n=8)
    gen = _gen(0)
    kinds = set()
    for _ in range(8):
        out = aug(images, gen)
        h = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
        v = [torch.equal(o, i.flip(-2)) for o, i in zip(out, images, strict=True)]
        assert all(h) or all(v), "one choice per batch"
        kinds.add("h" if all(h) else "v")
    assert kinds == {"h", "v"}, "the choice changes from batch to batch"

    perceiver = build_augment("perceiver", img_size=IMG)
    assert perceiver.counts == (1, 4) and perceiver.sequence is None
    copies = _images(n=1).expand(32, -1, -1, -1).contiguous()
    out = perceiver(copies, _gen(1))
    assert len({tuple(o.flatten().tolist()) for o in out}) >= 16, "every image its own choice of ops"


def test_the_fast_path_is_the_kornia_ops_distribution() -> None:
    """The crop+flip fast path and kornia's RandomCrop + RandomHorizontalFlip give the same kind of output: a
    shifted, possibly mirrored crop of the zero-padded image (checked on the centre, always inside)."""
    ops = [{"RandomCrop": {"size": [IMG, IMG], "padding": 2}}, {"RandomHorizontalFlip": {}}]
    fast = build_augment(ops, img_size=IMG)
    slow = build_augment({"ops": ops, "random_apply": False}, img_size=IMG)
    assert fast.fast[0] == 2 and slow.fast[0] == 0 and slow.sequence is not None
    images = _images(n=16)
    for out in (fast(images, _gen(0)), slow(images, _gen(0))):
        for img, res in zip(images, out, strict=True):
            centre = res[:, 2:-2, 2:-2]
            assert any(torch.equal(centre, cand[:, y:y + IMG - 4, x:x + IMG - 4])
                       for cand in (img, img.flip(-1)) for y in range(5) for x in range(5))


@pytest.mark.parametrize("mix", [{"RandomMixUpV2": {}}, {"RandomCutMixV2": {}},
                                 {"RandomCutMixV2": {"use_correct_lambda": True}},
                                 {"RandomMixUpV2": {"lambda_val": [0.2, 0.4]}}], ids=str)
def test_mixes_make_soft_targets_that_match_the_images(mix: dict) -> None:
    """Each image of class k is the constant 20 k: after a mix, its mean is the targets' weighted mean of the
    classes' values, so the soft target weighs each label by its share of the image."""
    n, k = 24, 8
    labels = torch.arange(n) % k
    images = (labels * 20).view(n, 1, 1, 1).expand(n, 3, IMG, IMG).to(torch.uint8).contiguous()
    aug = build_augment([{"RandomHorizontalFlip": {}}, mix], img_size=IMG)
    assert aug.mixes_labels
    out, targets = aug.augment(images, labels, _gen(0), num_classes=k)
    assert targets.shape == (n, k) and torch.allclose(targets.sum(1), torch.ones(n))
    expected = targets @ (torch.arange(k).float() * 20)
    assert torch.allclose(out.float().mean((1, 2, 3)), expected, atol=1.0), (out.float().mean((1, 2, 3)), expected)
    assert (targets.max(1).values < 1).any(), "some images are mixed"
    again, targets2 = aug.augment(images, labels, _gen(0), num_classes=k)
    assert torch.equal(again, out) and torch.equal(targets, targets2)


@pytest.mark.parametrize("loss", ["cross_entropy", "l2", "mse"])
def test_losses_take_soft_targets(loss: str) -> None:
    """A one-hot soft target gives the hard label's loss; a mixed one lies between its two classes' losses, and
    train_acc compares with the arg-max of the target."""
    fn = build_loss(loss)  # type: ignore[arg-type]
    outputs = torch.randn(6, 5, generator=_gen(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    hard = fn(outputs, labels)
    assert torch.allclose(fn(outputs, torch.nn.functional.one_hot(labels, 5).float()), hard)
    other = (labels + 1) % 5
    soft = 0.7 * torch.nn.functional.one_hot(labels, 5).float() + 0.3 * torch.nn.functional.one_hot(other, 5).float()
    mixed = fn(outputs, soft)
    lo, hi = sorted([hard.item(), fn(outputs, other).item()])
    assert lo - 1e-5 <= mixed.item() <= hi + 1e-5 or loss != "cross_entropy"
    assert torch.equal(hard_labels(soft), labels) and torch.equal(hard_labels(labels), labels)
