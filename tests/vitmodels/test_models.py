"""Every registered model, parametrised over ``list_models()`` (as timm's ``tests/test_models.py``).

Sizes are small so the file runs in well under two minutes on two CPU cores: models whose defaults are big get
small architecture overrides in ``SMALL``; a new model is tested the day it is registered, with its defaults
unless it is added there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import vitmodels
from vitmodels import (
    InvalidArchError,
    PretrainedWeightsError,
    UnknownModelError,
    create_model,
    describe_models,
    is_model,
    list_models,
)

NUM_CLASSES = 5
BATCH = 2
# Small overrides for models whose defaults are slow on CPU; image size per model where 32 does not suit.
SMALL: dict[str, dict[str, Any]] = {
    "convmixer": {"dim": 32, "depth": 2},
    "mlp_mixer": {"num_blocks": 2, "embed_dim": 32},
    "mlp_mixer_b16": {"num_blocks": 1, "embed_dim": 64},
    "mlp_mixer_s16": {"num_blocks": 1, "embed_dim": 64},
    "perceiver": {"depth": 1, "num_latents": 16, "latent_dim": 32},
    "perceiver_io": {"depth": 1, "num_latents": 16, "latent_dim": 32, "queries_dim": 32},
    "swin": {"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 2, 4)},
    "tnt": {"depth": 1, "patch_dim": 32},
    "tnt_s": {"depth": 1},
    "vit": {"num_layers": 2, "hidden_dim": 64, "mlp_dim": 64},
    "vit_conv": {"depth": 2, "dim": 64, "mlp_dim": 64},
    "vit_stn": {"num_layers": 2, "hidden_dim": 64, "mlp_dim": 64},
}
IMG_SIZE: dict[str, int] = {}
MODELS = list_models()


def small(name: str) -> tuple[int, dict[str, Any]]:
    return IMG_SIZE.get(name, 32), dict(SMALL.get(name, {}))


def build(name: str, **kwargs: Any) -> torch.nn.Module:
    img_size, arch = small(name)
    arch.update(kwargs.pop("arch", {}))
    return create_model(
        name, num_classes=NUM_CLASSES, img_size=kwargs.pop("img_size", img_size), **kwargs, **arch
    )


@pytest.fixture(scope="module")
def described() -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in describe_models(img_size=32, in_chans=3, num_classes=NUM_CLASSES)}


def test_registry() -> None:
    assert MODELS == sorted(MODELS)
    assert set(MODELS) >= {
        "cnn",
        "convmixer",
        "efficientnetv2_b0",
        "mlp_mixer",
        "mlp_mixer_b16",
        "mlp_mixer_s16",
        "perceiver",
        "perceiver_io",
        "resnet18",
        "swin",
        "tnt",
        "tnt_s",
        "vit",
        "vit_conv",
        "vit_stn",
    }
    assert all(is_model(n) for n in MODELS)
    assert is_model("timm:resnet18") and not is_model("timm:no_such_model") and not is_model("no_such_model")
    assert set(vitmodels.__all__) >= {
        "create_model",
        "list_models",
        "register_model",
        "is_model",
        "describe_models",
    }


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = build(name)
    img_size, _ = small(name)
    x = torch.randn(BATCH, 3, img_size, img_size)
    out = model(x)
    assert out.shape == (BATCH, NUM_CLASSES)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), (
        "every parameter gets a gradient"
    )


@pytest.mark.parametrize("code_size", [None, 7])
@pytest.mark.parametrize("name", MODELS)
def test_embedding(name: str, code_size: int | None) -> None:
    model = build(name, code_size=code_size, in_chans=1).eval()
    img_size, _ = small(name)
    with torch.no_grad():
        features = model.forward_features(torch.randn(BATCH, 1, img_size, img_size))
    assert isinstance(model.num_features, int)
    assert features.shape == (BATCH, model.num_features)
    if code_size is not None:
        assert model.num_features == code_size


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_output(name: str) -> None:
    img_size, _ = small(name)
    x = torch.randn(BATCH, 3, img_size, img_size)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build(name).eval()
        with torch.no_grad():
            outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_meta_device_and_described_params(name: str, described: dict[str, dict[str, Any]]) -> None:
    with torch.device("meta"):
        meta = create_model(name, num_classes=NUM_CLASSES, img_size=32)
    assert all(p.is_meta for p in meta.parameters())
    row = described[name]
    assert row["family"] and isinstance(row["defaults"], dict)
    real = create_model(name, num_classes=NUM_CLASSES, img_size=32)
    assert row["param_count"] == sum(p.numel() for p in real.parameters())


# -- invalid arguments ------------------------------------------------------------------------------------


def test_unknown_model() -> None:
    with pytest.raises(UnknownModelError, match=r"valid: .*vit"):
        create_model("no_such_model", num_classes=2, img_size=32)
    with pytest.raises(UnknownModelError):
        create_model("timm:no_such_model", num_classes=2, img_size=32)


@pytest.mark.parametrize("name", ["vit", "swin", "mlp_mixer", "timm:resnet18"])
def test_unknown_keyword(name: str) -> None:
    with pytest.raises(InvalidArchError, match=r"no_such_kwarg.*accepted: "):
        create_model(name, num_classes=2, img_size=32, no_such_kwarg=1)


@pytest.mark.parametrize(
    ("name", "arch", "match"),
    [
        ("vit", {"patch_size": 5}, "patch_size must divide img_size"),
        ("vit", {"num_heads": 3}, "num_heads must divide hidden_dim"),
        ("vit", {"patch_embedding": "pixel"}, "patch_embedding must be one of"),
        ("vit", {"dropout": 1.5}, "dropout must be a probability"),
        ("vit", {"qkv_bias": "no"}, "qkv_bias must be true or false"),
        ("cnn", {"depth": 0}, "depth must be a positive integer"),
        ("cnn", {"padding": -1}, "padding must be a non-negative integer"),
        ("cnn", {"padding": 0, "pool": True, "depth": 4}, "the feature map vanishes"),
        ("vit_conv", {"patch_size": 3}, "patch_size must divide img_size"),
        ("vit_conv", {"attention_dropout": 1.0}, "attention_dropout must be a probability"),
        ("vit_stn", {"num_heads": 5}, "num_heads must divide hidden_dim"),
        ("swin", {"window_size": 3}, "window_size must divide the token grid"),
        ("swin", {"window_size": 6, "patch_size": 2}, "window_size must divide the token grid"),
        ("swin", {"num_heads": (3, 4, 8, 16)}, r"num_heads\[0\] must divide the stage width"),
        ("swin", {"depths": (2, 2), "num_heads": (2, 4, 8)}, "num_heads must have 2 entries"),
        ("swin", {"patch_size": 6}, "patch_size must divide img_size"),
        ("swin", {"no_such_kwarg": 1}, "unknown arch keyword no_such_kwarg"),
        ("tnt", {"pixel_size": 3}, "pixel_size must divide patch_size"),
        ("tnt_s", {"patch_size": 12}, "patch_size must divide img_size"),
        ("perceiver", {"max_freq": 0}, "max_freq must be a positive number"),
        ("perceiver_io", {"tokens": "words"}, "tokens must be one of"),
        ("perceiver_io", {"tokens": "patches", "patch_size": 5}, "patch_size must divide img_size"),
        ("mlp_mixer", {"patch_size": 5}, "patch_size must divide img_size"),
        ("mlp_mixer", {"mlp_ratio": -1}, "mlp_ratio must be a positive number"),
        ("convmixer", {"patch_size": 3}, "patch_size must divide img_size"),
        ("efficientnetv2_b0", {"no_such_kwarg": 1}, "unknown arch keyword no_such_kwarg"),
        ("resnet18", {"cifar_stem": "no"}, "cifar_stem must be true or false"),
        ("timm:resnet18", {"features_only": True}, "timm.create_model option, not an arch keyword"),
        ("timm:vit_tiny_patch16_224", {"num_heads": 5}, "cannot be built"),
    ],
)
def test_invalid_values(name: str, arch: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArchError, match=match):
        create_model(name, num_classes=2, img_size=32, **arch)
    with pytest.raises(InvalidArchError, match=match), torch.device("meta"):
        create_model(name, num_classes=2, img_size=32, **arch)


@pytest.mark.parametrize(
    ("arch", "code_size"),
    [({"padding": 0, "pool": False, "hidden_dim": None}, 128), ({"padding": 0, "pool": False}, None)],
)
def test_cnn_is_seed_001_conv_encoder(arch: dict[str, Any], code_size: int | None) -> None:
    """Seed 001's ConvEncoder: three unpadded 3x3 convolutions of 32 channels, a 128-wide layer, 10 classes."""
    model = create_model("cnn", num_classes=10, img_size=28, in_chans=1, code_size=code_size, **arch)
    assert sum(p.numel() for p in model.parameters()) == 2_002_698
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [(32, (3, 3), (0, 0))] * 3
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.num_features == 128


def test_invalid_common_arguments() -> None:
    with pytest.raises(InvalidArchError, match="num_classes"):
        create_model("vit", num_classes=0, img_size=32)
    with pytest.raises(InvalidArchError, match="code_size"):
        create_model("vit", num_classes=2, img_size=32, code_size=-1)


# -- pretrained weights -------------------------------------------------------------------------------------


def _non_classifier(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith(("head.", "code."))}


@pytest.mark.parametrize(
    ("name", "arch", "sizes"),
    [
        ("vit", {"num_layers": 1, "hidden_dim": 32, "mlp_dim": 32}, (32, 64)),
        ("vit_conv", {"depth": 1, "dim": 32, "mlp_dim": 32}, (32, 16)),
        ("cnn", {}, (32, 32)),
        ("swin", SMALL["swin"], (32, 64)),
        ("swin", SMALL["swin"], (32, 96)),  # window 8 -> 12: relative position tables are resized
        ("tnt_s", {"depth": 1}, (32, 64)),
        ("mlp_mixer", SMALL["mlp_mixer"], (32, 32)),
        ("convmixer", SMALL["convmixer"], (32, 64)),
        ("timm:vit_tiny_patch16_224", {"patch_size": 4, "depth": 1}, (32, 64)),
    ],
)
def test_pretrained_roundtrip(
    name: str, arch: dict[str, Any], sizes: tuple[int, int], tmp_path: Path
) -> None:
    source = create_model(name, num_classes=10, img_size=sizes[0], **arch)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    target = create_model(name, num_classes=3, img_size=sizes[1], pretrained=path, **arch)
    expected, loaded = _non_classifier(source), _non_classifier(target)
    assert expected.keys() == loaded.keys()
    for key in expected:
        if expected[key].shape == loaded[key].shape:
            torch.testing.assert_close(loaded[key], expected[key], msg=key)
    assert target.head.out_features == 3


def test_pretrained_same_shape_keeps_head(tmp_path: Path) -> None:
    source = build("vit", code_size=4)
    path = tmp_path / "vit.pt"
    torch.save(source.state_dict(), path)
    target = build("vit", code_size=4, pretrained=path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, msg=key)


def test_pretrained_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(PretrainedWeightsError, match=r"nope\.pt.*unreachable"):
        create_model("vit", num_classes=2, img_size=32, pretrained=missing)
    with pytest.raises(FileNotFoundError):
        create_model("vit", num_classes=2, img_size=32, pretrained=missing)


def test_pretrained_wrong_architecture(tmp_path: Path) -> None:
    path = tmp_path / "cnn.pt"
    torch.save(create_model("cnn", num_classes=2, img_size=32).state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="do not fit"):
        create_model("vit", num_classes=2, img_size=32, pretrained=path)


# -- family specifics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("img_size", [16, 48])
def test_perceiver_takes_any_size(img_size: int) -> None:
    model = build("perceiver").eval()
    with torch.no_grad():
        assert model(torch.randn(BATCH, 3, img_size, img_size)).shape == (BATCH, NUM_CLASSES)


@pytest.mark.parametrize(("tokens", "img_size"), [("patches", 32), ("flat", 8)])
def test_perceiver_io_tokens(tokens: str, img_size: int) -> None:
    model = build("perceiver_io", img_size=img_size, arch={"tokens": tokens}, code_size=6)
    x = torch.randn(BATCH, 3, img_size, img_size)
    assert model(x).shape == (BATCH, NUM_CLASSES)
    assert model.forward_features(x).shape == (BATCH, 6)


def test_vit_stn_starts_at_identity_and_exposes_warp() -> None:
    model = build("vit_stn").eval()
    x = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.warp(x), x, atol=1e-5, rtol=0)
        model(x)
    assert model.last_warped is not None and model.last_warped.shape == x.shape


@pytest.mark.parametrize("name", ["cnn", "resnet18", "perceiver", "timm:resnet18"])
def test_a_spatial_transformer_goes_in_front_of_any_family(name: str) -> None:
    torch.manual_seed(0)
    plain = build(name).eval()
    torch.manual_seed(0)
    model = build(name, stn={"channels": 4, "hidden": 16}).eval()
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    # localisation: conv 3->4 (5x5), conv 4->8 (3x3), linear 8*16->16, theta 16->6
    assert extra == (3 * 4 * 25 + 4) + (4 * 8 * 9 + 8) + (8 * 16 * 16 + 16) + (16 * 6 + 6)
    x = torch.randn(BATCH, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.warp(x), x, atol=1e-5, rtol=0)  # starts at the identity
        out = model(x)
    assert out.shape == (BATCH, NUM_CLASSES) and model.last_warped is not None
    assert model.forward_features(x).shape == plain.forward_features(x).shape
    assert not callable(getattr(plain, "warp", None))
    with pytest.raises(InvalidArchError, match="unknown stn option"):
        build(name, stn={"chanels": 4})


def test_perceiver_io_query_is_learned_or_a_fixed_random_buffer() -> None:
    learned = build("perceiver_io")
    fixed = build("perceiver_io", arch={"query": "fixed"})
    assert isinstance(learned.backbone.query, torch.nn.Parameter)
    assert "backbone.query" in dict(fixed.named_buffers()) and "backbone.query" in fixed.state_dict()
    assert sum(p.numel() for p in learned.parameters()) - sum(p.numel() for p in fixed.parameters()) == 32
    with pytest.raises(InvalidArchError, match="query must be one of"):
        build("perceiver_io", arch={"query": "random"})


@pytest.mark.parametrize(("img_size", "window_size"), [(32, 8), (64, 8), (96, 12)])
def test_swin_window_presets(img_size: int, window_size: int) -> None:
    with torch.device("meta"):
        model = create_model("swin", num_classes=2, img_size=img_size)
    assert model.arch["window_size"] == window_size
    assert model.arch["depths"] == (2, 2, 8, 2) and model.arch["embed_dim"] == 64


def test_swin_window_checked_at_every_stage() -> None:
    # 96px / patch 4: grids 24, 12, 6, 3; a window of 8 divides stage 0 but not stage 1.
    with pytest.raises(InvalidArchError, match="stage 1 has a 12x12 grid"), torch.device("meta"):
        create_model("swin", num_classes=2, img_size=96, window_size=8)


def test_vit_conv_attention_dropout_apart_from_dropout() -> None:
    """Seed 004's conv-only ViT drops tokens and projections (0.1) but not attention weights; unset, the
    attention's rate follows ``dropout``."""
    from vitmodels.vit_conv import ConvAttention

    for arch, expected in (({"dropout": 0.1, "attention_dropout": 0.0}, 0.0), ({"dropout": 0.1}, 0.1)):
        model = build("vit_conv", arch=arch)
        attn = model.get_submodule("backbone.blocks.0.attn")
        assert isinstance(model, vitmodels.Classifier) and isinstance(attn, ConvAttention)
        assert attn.attention_dropout == expected and model.arch["attention_dropout"] == expected
        assert model.get_submodule("backbone.blocks.0.attn.out.1").p == 0.1


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["vit", "vit_stn"])
def test_vit_without_qkv_bias(name: str) -> None:
    """Seed 003's ViT projects q, k and v without a bias (its output projection keeps one): 3 * hidden_dim fewer
    parameters a layer, and it still trains."""
    with_bias, without = build(name), build(name, arch={"qkv_bias": False})
    _, arch = small(name)
    assert n_params(with_bias) - n_params(without) == arch["num_layers"] * 3 * arch["hidden_dim"]
    loss = without(torch.randn(BATCH, 3, 32, 32)).sum()
    loss.backward()
    without.eval()
    with torch.no_grad():
        assert without(torch.randn(BATCH, 3, 32, 32)).shape == (BATCH, NUM_CLASSES)


def test_vit_linear_patch_embedding() -> None:
    model = build("vit", arch={"patch_embedding": "linear"}, in_chans=1)
    assert model(torch.randn(BATCH, 1, 32, 32)).shape == (BATCH, NUM_CLASSES)


@pytest.mark.parametrize(
    ("name", "arch"),
    [("timm:resnet18", {}), ("timm:vit_tiny_patch16_224", {"patch_size": 4, "depth": 1})],
)
def test_any_timm_model(name: str, arch: dict[str, Any]) -> None:
    model = create_model(name, num_classes=NUM_CLASSES, img_size=32, in_chans=1, code_size=8, **arch)
    x = torch.randn(BATCH, 1, 32, 32)
    assert model(x).shape == (BATCH, NUM_CLASSES)
    assert model.forward_features(x).shape == (BATCH, 8) and model.num_features == 8
    with torch.device("meta"):
        create_model(name, num_classes=NUM_CLASSES, img_size=32, **arch)


def test_pretrained_from_a_timm_checkpoint(tmp_path: Path) -> None:
    """A raw timm state dict (its own classifier included) fine-tunes at another size and class count."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("tnt_s_patch16_224", num_classes=1000, img_size=32, depth=1)
    path = tmp_path / "tnt_s.safetensors"
    save_file(source.state_dict(), str(path))
    target = create_model("tnt_s", num_classes=3, img_size=64, pretrained=path, depth=1)
    loaded = target.backbone.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("head.") and key != "patch_pos":
            torch.testing.assert_close(loaded[key], value, msg=key)
    assert loaded["patch_pos"].shape == (1, 17, 384)


def test_pretrained_mixer_needs_the_same_token_count(tmp_path: Path) -> None:
    path = tmp_path / "mixer.pt"
    torch.save(build("mlp_mixer").state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="mlp_tokens"):
        build("mlp_mixer", img_size=64, pretrained=path)
