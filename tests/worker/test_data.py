"""Dataset loaders, each fed a few images written in its real on-disk format."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from worker.data import DatasetSplits, FileImageSet, TensorImageSet, list_datasets, load_dataset
from worker.exceptions import DataFormatError, DataNotFoundError

# Image i of class k carries COLORS[k] in its top-left quarter: a pattern every loader must keep.
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
GRAY = 128


def _check_splits(splits: DatasetSplits, *, img_size: int, in_chans: int, num_classes: int) -> None:
    assert splits.num_classes == num_classes == len(splits.classes)
    assert len(splits.mean) == len(splits.std) == in_chans
    assert all(0 <= m <= 1 for m in splits.mean) and all(0 < s <= 1 for s in splits.std)
    for part in (splits.train, splits.val):
        assert len(part) > 0 and part.labels.dtype == torch.long and part.labels.shape == (len(part),)
        image, label = part[0]
        assert image.dtype == torch.uint8 and image.shape == (in_chans, img_size, img_size)
        assert isinstance(label, int) and 0 <= label < num_classes
        assert int(part.labels.min()) >= 0 and int(part.labels.max()) < num_classes


def test_registry() -> None:
    expected = [
        "cifar10",
        "digits",
        "dogs_vs_cats",
        "fashion_mnist",
        "imagefolder",
        "stl10",
        "synthetic",
        "tiny_imagenet",
    ]
    assert set(expected) <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope", root=Path("."), img_size=8)


def test_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bogus"):
        load_dataset("digits", root=tmp_path, img_size=8, bogus=1)


# -- digits and synthetic -------------------------------------------------------------------------------------


def test_digits_real_data(tmp_path: Path) -> None:
    splits = load_dataset("digits", root=tmp_path, img_size=8, in_chans=1)
    _check_splits(splits, img_size=8, in_chans=1, num_classes=10)
    assert len(splits.train) + len(splits.val) == 1797
    assert abs(len(splits.val) - 0.2 * 1797) <= 1
    assert isinstance(splits.train, TensorImageSet) and splits.train.in_memory
    assert int(splits.train.images.max()) == 255 and int(splits.train.images.min()) == 0
    # statistics are computed from the training split
    expected = splits.train.images.float().div(255)
    assert splits.mean[0] == pytest.approx(float(expected.mean()), abs=1e-3)
    assert splits.std[0] == pytest.approx(float(expected.std()), abs=1e-3)


def test_digits_resized_and_expanded(tmp_path: Path) -> None:
    splits = load_dataset("digits", root=tmp_path, img_size=16, in_chans=3, max_train=100)
    _check_splits(splits, img_size=16, in_chans=3, num_classes=10)
    assert len(splits.train) == 100
    images = splits.train.images
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert len(set(splits.mean)) == 1


def test_val_fraction_stratified_and_seeded(tmp_path: Path) -> None:
    a = load_dataset("digits", root=tmp_path, img_size=8, val_fraction=0.3, seed=1)
    b = load_dataset("digits", root=tmp_path, img_size=8, val_fraction=0.3, seed=1)
    c = load_dataset("digits", root=tmp_path, img_size=8, val_fraction=0.3, seed=2)
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    assert abs(len(a.val) - round(0.3 * 1797)) <= 1
    total = torch.bincount(torch.cat([a.train.labels, a.val.labels]), minlength=10).float()
    share = torch.bincount(a.val.labels, minlength=10) / total
    assert torch.all((share - 0.3).abs() < 0.02), share


def test_synthetic_seeded(tmp_path: Path) -> None:
    a = load_dataset("synthetic", root=tmp_path, img_size=16, num_samples=200, num_classes=4)
    b = load_dataset("synthetic", root=tmp_path, img_size=16, num_samples=200, num_classes=4)
    c = load_dataset("synthetic", root=tmp_path, img_size=16, num_samples=200, num_classes=4, data_seed=1)
    _check_splits(a, img_size=16, in_chans=3, num_classes=4)
    assert len(a.train) + len(a.val) == 200 and len(a.val) == 40
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.train.images, c.train.images)


def test_synthetic_learnable(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    splits = load_dataset("synthetic", root=tmp_path, img_size=16, in_chans=1, num_samples=600, num_classes=5)
    x_train = splits.train.images.flatten(1).float().numpy() / 255
    x_val = splits.val.images.flatten(1).float().numpy() / 255
    model = LogisticRegression(max_iter=500).fit(x_train, splits.train.labels.numpy())
    assert model.score(x_val, splits.val.labels.numpy()) > 0.6  # chance is 0.2


def test_synthetic_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset("synthetic", root=tmp_path, img_size=8, num_classes=1)
    with pytest.raises(ValueError, match="max_train"):
        load_dataset("synthetic", root=tmp_path, img_size=8, max_train=0)


# -- writers for the real on-disk formats ------------------------------------------------------------------


def _pattern(labels: list[int], side: int, chans: int = 3) -> np.ndarray:
    """uint8 [N, C, side, side]: gray, with the class colour in the top-left quarter."""
    images = np.full((len(labels), chans, side, side), GRAY, dtype=np.uint8)
    for i, label in enumerate(labels):
        color = COLORS[label][:chans] if chans == 3 else (60 * (label + 1),)
        images[i, :, : side // 2, : side // 2] = np.asarray(color, dtype=np.uint8)[:, None, None]
    return images


def _assert_pattern(image: torch.Tensor, label: int, *, tol: int = 0, chans: int = 3) -> None:
    side = image.shape[-1]
    color = COLORS[label][:chans] if chans == 3 else (60 * (label + 1),)
    corner = image[:, : side // 4, : side // 4].reshape(image.shape[0], -1).int()
    expected = torch.tensor(color, dtype=torch.int32)[:, None]
    assert (corner - expected).abs().max() <= tol, (label, corner[:, 0].tolist(), color)
    rest = image[:, -side // 4 :, -side // 4 :].int()
    assert (rest - GRAY).abs().max() <= tol


def _write_pil(path: Path, array: np.ndarray, **save: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    img.save(path, **save)


def write_cifar(root: Path, per_batch: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    for b, name in enumerate(names):
        labels = [(b + i) % 4 for i in range(per_batch)]
        data = _pattern(labels, 32).reshape(per_batch, 3072)  # rows: R plane, G plane, B plane
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [b"x.png"] * per_batch,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat"], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def write_stl(root: Path, n_train: int = 8, n_test: int = 4) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = [i % 4 for i in range(n)]
        images = _pattern(labels, 96)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())  # column-major
        (folder / f"{split}_y.bin").write_bytes(bytes(label + 1 for label in labels))  # stored as 1..10
    (folder / "class_names.txt").write_text("airplane\nbird\ncar\ncat\n")


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(root: Path, folder: str = "fashion_mnist", n_train: int = 12, n_test: int = 4) -> None:
    path = root / folder
    path.mkdir(parents=True)
    for prefix, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
        labels = [i % 4 for i in range(n)]
        images = _pattern(labels, 28, chans=1)[:, 0]
        for kind, array in (("images-idx3", images), ("labels-idx1", np.asarray(labels))):
            data = _idx(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (path / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (path / name).write_bytes(data)


def write_tiny(root: Path, per_class: int = 3) -> list[str]:
    folder = root / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text(
        "n00001740\tentity\nn01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n"
        "n01641577\tbullfrog, Rana catesbeiana\n"
    )
    for k, wnid in enumerate(wnids):
        (folder / "train" / wnid / "images").mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            _write_pil(
                folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", _pattern([k], 64)[0], quality=95
            )
    lines = []
    for i in range(2 * len(wnids)):
        k = i % len(wnids)
        _write_pil(folder / "val" / "images" / f"val_{i}.JPEG", _pattern([k], 64)[0], quality=95)
        lines.append(f"val_{i}.JPEG\t{wnids[k]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


def write_kaggle(root: Path, per_class: int = 5) -> None:
    folder = root / "dogs_vs_cats" / "train"
    for k, animal in enumerate(("cat", "dog")):
        for i in range(per_class):
            side = 40 + 8 * i  # photos come in all sizes
            _write_pil(folder / f"{animal}.{i}.jpg", _pattern([k], side)[0], quality=95)
    (folder / "readme.txt").write_text("not an image")


def write_imagefolder(folder: Path, classes: tuple[str, ...] = ("ants", "bees"), per_class: int = 5) -> None:
    for k, name in enumerate(classes):
        for i in range(per_class):
            sub = "nested/" if i == 0 else ""  # torchvision's ImageFolder walks sub-folders too
            _write_pil(folder / name / f"{sub}{i}.png", _pattern([k], 24)[0])


# -- the file-based loaders -------------------------------------------------------------------------------


def test_cifar10(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    splits = load_dataset("cifar10", root=tmp_path, img_size=32)
    _check_splits(splits, img_size=32, in_chans=3, num_classes=4)
    assert splits.classes == ["airplane", "automobile", "bird", "cat"]
    assert len(splits.train) == 20 and len(splits.val) == 4
    assert splits.mean == (0.4914, 0.4822, 0.4465)
    for image, label in list(splits.train) + list(splits.val):
        _assert_pattern(image, label)
    assert splits.val.labels.tolist() == [5 % 4, 6 % 4, 7 % 4, 8 % 4]


def test_cifar10_resized_gray(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    splits = load_dataset("cifar10", root=tmp_path, img_size=16, in_chans=1)
    _check_splits(splits, img_size=16, in_chans=1, num_classes=4)
    image, label = splits.train[0]
    luma = round(sum(w * c for w, c in zip((0.299, 0.587, 0.114), COLORS[label], strict=True)))
    assert abs(int(image[0, 0, 0]) - luma) <= 1 and abs(int(image[0, -1, -1]) - GRAY) <= 1
    assert len(splits.mean) == 1  # computed from the converted training split


def test_cifar10_refuses_code_in_pickles(tmp_path: Path) -> None:
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataFormatError, match=r"refusing to load builtins\.print"):
        load_dataset("cifar10", root=tmp_path, img_size=32)


def test_stl10(tmp_path: Path) -> None:
    write_stl(tmp_path)
    splits = load_dataset("stl10", root=tmp_path, img_size=96)
    _check_splits(splits, img_size=96, in_chans=3, num_classes=4)
    assert len(splits.train) == 8 and len(splits.val) == 4
    assert splits.classes == ["airplane", "bird", "car", "cat"]
    assert splits.train.labels.tolist() == [0, 1, 2, 3] * 2
    for image, label in splits.train:
        _assert_pattern(image, label)
    small = load_dataset("stl10", root=tmp_path, img_size=32)
    for image, label in small.val:
        _assert_pattern(image, label, tol=1)


@pytest.mark.parametrize("folder", ["fashion_mnist", "FashionMNIST/raw"])
def test_fashion_mnist(tmp_path: Path, folder: str) -> None:
    write_fashion(tmp_path, folder)  # train files gzipped, t10k files plain
    splits = load_dataset("fashion_mnist", root=tmp_path, img_size=28, in_chans=1)
    _check_splits(splits, img_size=28, in_chans=1, num_classes=10)
    assert splits.classes[0] == "T-shirt/top" and splits.mean == (0.2860,)
    assert len(splits.train) == 12 and len(splits.val) == 4
    for image, label in splits.train:
        _assert_pattern(image, label, chans=1)


def test_fashion_mnist_expanded(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    splits = load_dataset("fashion_mnist", root=tmp_path, img_size=32, in_chans=3, val_fraction=0.25)
    _check_splits(splits, img_size=32, in_chans=3, num_classes=10)
    assert len(splits.train) == 9 and len(splits.val) == 3  # carved from the 12 training images
    images = splits.train.images
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    assert splits.mean == (0.2860,) * 3 and splits.std == (0.3530,) * 3


def test_fashion_mnist_bad_header(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    (tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte").write_bytes(
        b"\x00\x00\x08\x01" + struct.pack(">I", 9)
    )
    with pytest.raises(DataFormatError, match="header says"):
        load_dataset("fashion_mnist", root=tmp_path, img_size=28)


def test_tiny_imagenet(tmp_path: Path) -> None:
    wnids = write_tiny(tmp_path)
    splits = load_dataset("tiny_imagenet", root=tmp_path, img_size=32)
    _check_splits(splits, img_size=32, in_chans=3, num_classes=3)
    assert splits.classes == ["goldfish", "European fire salamander", "bullfrog"]
    assert len(splits.train) == 9 and len(splits.val) == 6 and splits.train.in_memory
    assert splits.val.labels.tolist() == [0, 1, 2, 0, 1, 2]
    for image, label in list(splits.train) + list(splits.val):
        _assert_pattern(image, label, tol=12)  # JPEG
    assert wnids[0] == "n01443537"


def test_tiny_imagenet_file_backed(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    splits = load_dataset("tiny_imagenet", root=tmp_path, img_size=32, in_memory=False, val_fraction=0.34)
    assert isinstance(splits.train, FileImageSet) and len(splits.val) == 3
    assert sorted(splits.val.labels.tolist()) == [0, 1, 2]  # stratified
    for image, label in splits.val:
        _assert_pattern(image, label, tol=12)


def test_dogs_vs_cats(tmp_path: Path) -> None:
    write_kaggle(tmp_path)
    splits = load_dataset("dogs_vs_cats", root=tmp_path, img_size=24)
    _check_splits(splits, img_size=24, in_chans=3, num_classes=2)
    assert splits.classes == ["cat", "dog"] and isinstance(splits.train, FileImageSet)
    assert len(splits.train) == 8 and sorted(splits.val.labels.tolist()) == [0, 1]
    for image, label in splits.train:  # images of every size squashed to 24 x 24
        _assert_pattern(image, label, tol=12)
    loader = torch.utils.data.DataLoader(splits.train, batch_size=4, num_workers=1)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 24, 24) and images.dtype == torch.uint8 and labels.dtype == torch.long
    tensors = splits.val.to_tensors()
    assert isinstance(tensors, TensorImageSet) and tensors.images.shape == (2, 3, 24, 24)


@pytest.mark.parametrize(("val_fraction", "n_val"), [(0, 0), (0.4, 4), (None, 2)])
def test_dogs_vs_cats_hold_out_is_set_in_the_spec(tmp_path: Path, val_fraction: float | None, n_val: int) -> None:
    """Kaggle's test1 is unlabelled: the spec says how much of train is held out (20% unless it says; 0: none)."""
    write_kaggle(tmp_path)
    splits = load_dataset("dogs_vs_cats", root=tmp_path, img_size=24, val_fraction=val_fraction)
    assert len(splits.val) == n_val and len(splits.train) == 10 - n_val
    assert sorted(splits.val.labels.tolist()) == sorted([0, 1] * (n_val // 2))  # stratified


def test_given_normalization_replaces_the_dataset_statistics(tmp_path: Path) -> None:
    own = load_dataset("digits", root=tmp_path, img_size=8, in_chans=1)
    given = load_dataset("digits", root=tmp_path, img_size=8, in_chans=1, normalization=((0.5,), (0.25,)))
    assert own.mean != (0.5,) and (given.mean, given.std) == ((0.5,), (0.25,))
    with pytest.raises(ValueError, match="needs 1 mean and std"):
        load_dataset("digits", root=tmp_path, img_size=8, in_chans=1, normalization=((0.5, 0.5), (0.2, 0.2)))


def test_imagefolder(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "custom" / "bugs")
    gray = np.full((1, 24, 24), 77, dtype=np.uint8)
    _write_pil(tmp_path / "custom" / "bugs" / "bees" / "gray.png", gray)  # a grayscale file among RGB ones
    splits = load_dataset("imagefolder", root=tmp_path, img_size=24, path="custom/bugs", val_fraction=0.25)
    _check_splits(splits, img_size=24, in_chans=3, num_classes=2)
    assert splits.classes == ["ants", "bees"] and len(splits.train) + len(splits.val) == 11
    everything = list(splits.train) + list(splits.val)
    assert sum(1 for image, _ in everything if int(image.min()) == 77 == int(image.max())) == 1
    for image, label in everything:
        if int(image.max()) != 77:
            _assert_pattern(image, label)
    assert len(splits.mean) == 3


def test_imagefolder_train_val_layout(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "pets" / "train", ("cat", "dog", "eel"), per_class=3)
    write_imagefolder(tmp_path / "pets" / "val", ("cat", "eel"), per_class=2)
    splits = load_dataset("imagefolder", root=tmp_path, img_size=12, in_chans=1, path="pets")
    _check_splits(splits, img_size=12, in_chans=1, num_classes=3)
    assert len(splits.train) == 9 and splits.val.labels.tolist() == [0, 0, 2, 2]


@pytest.mark.parametrize("path", ["/etc", "../outside", "inside/../../outside", "~/x", ""])
def test_imagefolder_rejects_escapes(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError, match="imagefolder"):
        load_dataset("imagefolder", root=tmp_path / "data", img_size=8, path=path)


def test_imagefolder_needs_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs option path"):
        load_dataset("imagefolder", root=tmp_path, img_size=8)


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("cifar10", {}, "cifar-10-batches-py"),
        ("stl10", {}, "stl10_binary"),
        ("fashion_mnist", {}, "FashionMNIST/raw"),
        ("tiny_imagenet", {}, "tiny-imagenet-200"),
        ("dogs_vs_cats", {}, "dogs_vs_cats/train"),
        ("imagefolder", {"path": "mine/flowers"}, "mine/flowers"),
    ],
)
def test_missing_files(tmp_path: Path, name: str, options: dict, expected: str) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(name, root=tmp_path, img_size=32, **options)
    message = str(info.value)
    assert str(tmp_path / expected) in message and "VITSWEEP_DOWNLOAD=1" in message


def test_missing_single_file(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataNotFoundError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path, img_size=32)


def test_download_errors_become_data_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataNotFoundError, match="network is unreachable"):
        load_dataset("cifar10", root=tmp_path, img_size=32, download=True)


def test_caps_are_stratified(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    splits = load_dataset("cifar10", root=tmp_path, img_size=32, max_train=8, max_val=2)
    assert len(splits.train) == 8 and len(splits.val) == 2
    assert torch.bincount(splits.train.labels, minlength=4).tolist() == [2, 2, 2, 2]


def test_bad_labels(tmp_path: Path) -> None:
    write_stl(tmp_path)
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 11]))
    with pytest.raises(DataFormatError, match=r"labels must be 1\.\.10"):
        load_dataset("stl10", root=tmp_path, img_size=32)
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 8]))
    with pytest.raises(DataFormatError, match=r"labels span 0\.\.7, expected 0\.\.3"):
        load_dataset("stl10", root=tmp_path, img_size=32)


def test_rgb_needs_one_or_three_channels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="in_chans must be 1"):
        load_dataset("cifar10", root=tmp_path, img_size=32, in_chans=4)
    grey = load_dataset("digits", root=tmp_path, img_size=8, in_chans=4)
    assert grey.train.images.shape[1] == 4 and len(grey.mean) == 4


def test_file_modes(tmp_path: Path) -> None:
    """Palette, RGBA and 16-colour grey files all decode to the requested channels."""
    from worker.data.images import decode_image

    rgba = Image.new("RGBA", (10, 6), (10, 20, 30, 128))
    rgba.save(tmp_path / "a.png")
    rgba.convert("RGB").convert("P").save(tmp_path / "p.png")
    Image.new("L", (5, 5), 99).save(tmp_path / "l.png")
    assert decode_image(tmp_path / "a.png", img_size=4, in_chans=3)[:, 0, 0].tolist() == [10, 20, 30]
    assert decode_image(tmp_path / "p.png", img_size=4, in_chans=3).shape == (3, 4, 4)
    assert decode_image(tmp_path / "l.png", img_size=4, in_chans=3).unique().tolist() == [99]
    assert decode_image(tmp_path / "a.png", img_size=4, in_chans=1).shape == (1, 4, 4)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataFormatError, match="cannot decode"):
        decode_image(tmp_path / "bad.jpg", img_size=4, in_chans=3)
