"""kornia's augmentations by their own names: ``dataset.augment: [{RandomCrop: {size: [32, 32], padding: 4}}, ...]``.

A pipeline is a list of one-key mappings ``{ClassName: {keywords}}``, each naming a class of
``kornia.augmentation`` (or TrivialAugment, RandAugment, AutoAugment of ``kornia.augmentation.auto``), optionally
with kornia's own ``random_apply``. Names resolve through a whitelist of those namespaces (nothing in a spec is
executed) and every keyword is checked against the class's real signature (``inspect.signature``). The spec
checks a pipeline here at submission (:func:`check_pipeline`, which also builds it and runs it once on a tiny
batch, so kornia's own value checks and a changed image size fail there); the worker builds the same objects
with :func:`build_op`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

AUTO = ("AutoAugment", "RandAugment", "TrivialAugment")
# Classes of kornia.augmentation a spec cannot use, and why (anything else deriving from its 2-d bases is allowed).
EXCLUDED = {
    "Normalize": "dataset.normalize normalises the inputs (augmentations run on the 0..255 images before it)",
    "Denormalize": "dataset.normalize normalises the inputs (augmentations run on the 0..255 images before it)",
    "RandomJigsaw": "it needs the batch split into patches it cannot check at submission",
    "RandomMosaic": "it changes the image size and needs boxes",
    "RandomTransplantation": "it needs segmentation masks",
    "PatchMix": "it mixes patches without mixing the labels",
}
# Keywords no spec can give: the worker sets them (the pipeline's output contract).
OWNED = {"keepdim": "the worker (batches stay [N, C, H, W])", "data_keys": "the worker (images, then labels)"}
MIX = ("RandomCutMixV2", "RandomMixUpV2")  # the label-mixing ones: the loss then takes soft targets
MAX_OPS = 32


class OpError(ValueError):
    """An op or pipeline kornia would not take; ``loc`` is where below ``dataset.augment`` (``("ops", 1,
    "RandomCrop", "paddin")``)."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc


@cache
def op_names() -> tuple[str, ...]:
    """Every class a pipeline may name, sorted: kornia.augmentation's 2-d augmentations (mixes included) and the
    three policies of kornia.augmentation.auto."""
    import kornia.augmentation as KA

    bases = (KA.AugmentationBase2D, KA.MixAugmentationBaseV2)
    abstract = {"AugmentationBase2D", "GeometricAugmentationBase2D", "IntensityAugmentationBase2D",
                "RigidAffineAugmentationBase2D", "MixAugmentationBaseV2"}
    names = [n for n in KA.__all__ if isinstance(getattr(KA, n, None), type) and issubclass(getattr(KA, n), bases)]
    return tuple(sorted({*(n for n in names if n not in abstract and n not in EXCLUDED), *AUTO}))


def op_class(name: str) -> type:
    """The whitelisted kornia class ``name``."""
    import kornia.augmentation as KA
    import kornia.augmentation.auto as KAuto

    if name not in op_names():
        why = f" cannot be used from a spec: {EXCLUDED[name]}" if name in EXCLUDED else " is not a kornia augmentation"
        raise OpError((), f"{name!r}{why}; valid: {', '.join(op_names())}")
    return getattr(KAuto if name in AUTO else KA, name)  # type: ignore[no-any-return]


@cache
def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls).parameters)
    params.pop("self", None)
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def split_op(op: Any) -> tuple[str, dict[str, Any]]:
    """``{ClassName: {keywords}}`` (keywords may be null for none) as ``(name, keywords)``."""
    if not isinstance(op, Mapping) or len(op) != 1:
        raise OpError((), f"an op is a one-key mapping {{ClassName: {{keywords}}}}, e.g. {{RandomHorizontalFlip: {{}}}}; "
                          f"got {str(op)[:80]}")
    ((name, keywords),) = op.items()
    if keywords is None:
        keywords = {}
    if not isinstance(name, str) or not isinstance(keywords, Mapping):
        raise OpError((), f"an op is {{ClassName: {{keywords}}}}; got {str(op)[:80]}")
    return name, dict(keywords)


def check_keywords(name: str, keywords: Mapping[str, Any]) -> type:
    """The class of ``name``, after checking every keyword is one it takes (and the required ones are given)."""
    try:
        cls = op_class(name)
    except OpError as exc:
        raise OpError((name,), str(exc)) from None
    params = _parameters(cls)
    settable = [n for n in params if n not in OWNED]
    for key in keywords:
        if key in OWNED and key in params:
            raise OpError((name, key), f"{name}'s {key} is set by {OWNED[key]}; leave it out")
        if key not in params:
            raise OpError((name, key), f"{name} takes no keyword {key!r}; valid: {', '.join(settable)}")
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in keywords:
            raise OpError((name, key), f"{name} needs {key!r}; give it, e.g. {{{name}: {{{key}: ...}}}}")
    return cls


def kornia_value(value: Any) -> Any:
    """A JSON value as kornia's constructors take it: lists become tuples (``size: [32, 32]``)."""
    if isinstance(value, list):
        return tuple(kornia_value(v) for v in value)
    return value


def build_op(name: str, keywords: Mapping[str, Any]) -> Any:
    """The kornia module ``name(**keywords)``; mixes also return their labels (``data_keys``)."""
    cls = check_keywords(name, keywords)
    kw = {k: kornia_value(v) for k, v in keywords.items()}
    if name in MIX:
        kw["data_keys"] = ["input", "class"]
    try:
        return cls(**kw)
    except Exception as exc:  # kornia's own checks raise many kinds; the message is what matters
        raise OpError((name, _culprit(str(exc), keywords)), f"{name} refuses these keywords: {exc}") from None


def _culprit(message: str, keywords: Mapping[str, Any]) -> str:
    """The keyword kornia's message names, else the only one given, else ``""`` (the op itself)."""
    text = message.lower()
    for key in sorted(keywords, key=len, reverse=True):
        if key.lower() in text:
            return key
    return next(iter(keywords)) if len(keywords) == 1 else ""


def random_apply_range(value: Any, n_ops: int) -> tuple[int, int]:
    """The inclusive ``(lo, hi)`` count of ops ``random_apply`` picks: n, ``[lo, hi]`` or ``[lo]`` (up to all
    ``n_ops``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        lo, hi = value, value
    elif isinstance(value, list | tuple) and len(value) in (1, 2) and all(isinstance(v, int) and not isinstance(v, bool)
                                                                          for v in value):
        lo, hi = value[0], value[-1] if len(value) == 2 else n_ops
    else:
        raise OpError(("random_apply",), f"random_apply is n, [lo, hi] or true (kornia's ImageSequential); got {value!r}")
    if not 0 <= lo <= hi or lo > n_ops:
        raise OpError(("random_apply",), f"random_apply must pick 0 <= lo <= hi ops of the {n_ops} image op(s); "
                                         f"got {value!r}")
    return lo, hi


def read_random_apply(value: Any, n_ops: int) -> int | tuple[int, int] | bool:
    """``random_apply`` as kornia's ImageSequential takes it: n, ``[lo, hi]`` (inclusive), ``[lo]`` or a bool."""
    if isinstance(value, bool):
        return value
    lo, hi = random_apply_range(value, n_ops)
    if isinstance(value, int):
        return value
    return (lo, hi) if len(value) == 2 else (lo,)  # type: ignore[return-value]


def check_pipeline(ops: Sequence[Any], random_apply: Any, *, where: tuple[str | int, ...], img_size: int,
                   in_chans: int) -> None:
    """Build every op and run the whole pipeline once on two tiny images (outside the global RNG's stream), so
    that names, keywords, values and a changed image size are refused at submission.

    Raises:
        OpError: ``loc`` below ``dataset.augment`` (``where`` is ``("ops",)`` or ``()``, as the user wrote it).
    """
    if not 1 <= len(ops) <= MAX_OPS:
        raise OpError(where, f"a pipeline has 1 to {MAX_OPS} ops, got {len(ops)}")
    names: list[str] = []
    for i, op in enumerate(ops):
        try:
            name, keywords = split_op(op)
            build_op(name, keywords)
        except OpError as exc:
            raise OpError((*where, i, *exc.loc), str(exc)) from None
        names.append(name)
    first_mix = next((i for i, n in enumerate(names) if n in MIX), len(names))
    late = next((i for i, n in enumerate(names) if i > first_mix and n not in MIX), None)
    if late is not None:
        raise OpError((*where, late, names[late]), f"{names[first_mix]} mixes images and labels, so it comes after the "
                      f"image ops; move {names[late]} before it")
    if random_apply is not None:
        read_random_apply(random_apply, first_mix)
    _dry_run(ops, random_apply, where=where, img_size=img_size, in_chans=in_chans)


def _dry_run(ops: Sequence[Any], random_apply: Any, *, where: tuple[str | int, ...], img_size: int,
             in_chans: int) -> None:
    import json

    error = _run_once(json.dumps({"ops": list(ops), "random_apply": random_apply}, sort_keys=True), img_size, in_chans)
    if error is not None:
        index, msg = error
        loc = (*where, index, split_op(ops[index])[0]) if index is not None else where
        raise OpError(loc, msg)


@cache
def _run_once(key: str, img_size: int, in_chans: int) -> tuple[int | None, str] | None:
    """Run the pipeline of ``key`` on two gray images under a forked RNG: None, or ``(op index, message)``."""
    import json

    import torch

    spec = json.loads(key)
    ops = [build_op(*split_op(op)) for op in spec["ops"]]
    size = img_size  # kornia's crop sizes are checked against the image's own
    x = torch.full((2, in_chans, size, size), 0.5)
    labels = torch.arange(2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for i, op in enumerate(ops):
            try:
                out = op(x, labels.float()) if type(op).__name__ in MIX else op(x)
            except Exception as exc:
                return i, f"{type(op).__name__} fails on a {in_chans}x{size}x{size} image: {exc}"
            out = out[0] if isinstance(out, tuple | list) else out
            if tuple(out.shape) != tuple(x.shape):
                return i, (f"{type(op).__name__} turns {in_chans}x{size}x{size} images into "
                           f"{'x'.join(map(str, out.shape[1:]))}; a pipeline must keep dataset.img_size")
            x = out
    return None
