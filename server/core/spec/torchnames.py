"""torch's optimizers and learning-rate schedulers by their own names: ``{name: AdamW, betas: [0.9, 0.99]}``.

A name resolves through a whitelist of ``torch.optim`` / ``torch.optim.lr_scheduler`` (nothing in a spec is
executed), and every keyword is checked against the class's real signature (``inspect.signature``). vitsweep
fills the keywords it owns (the parameters, the learning rate from ``train.lr``, fused kernels, the length of
the run from the budget); a block that gives one of them is refused, saying where it comes from. One set of
rules for both ends: ``TrainSpec`` checks its blocks here at submission (:func:`check_keywords`,
:func:`check_train`), and the worker builds what :func:`optimizer_recipe` and :func:`scheduler_recipe` say.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

# Classes of the namespaces a spec cannot use, and why (anything else that derives from the base is allowed).
OPTIMIZER_EXCLUDED = {
    "LBFGS": "it needs a closure that re-evaluates the loss at every step",
    "SparseAdam": "it needs sparse gradients, which no model here has",
    "Muon": "it takes 2-d parameters only, and every model here has biases and norms",
}
SCHEDULER_EXCLUDED = {
    "LambdaLR": "it takes a Python function (use OneCycleLR with anneal_strategy: linear for a triangle)",
    "MultiplicativeLR": "it takes a Python function",
    "SequentialLR": "it takes other scheduler objects",
    "ChainedScheduler": "it takes other scheduler objects",
}
# Keywords vitsweep passes itself: a block must not give them. Optimizers: all of them; schedulers: per class.
OPTIMIZER_OWNED = {
    "params": "the model's parameter groups",
    "lr": "train.lr",
    "fused": "train.fused_optimizer",
    "foreach": "train.fused_optimizer",
}
SCHEDULER_OWNED: dict[str, dict[str, str]] = {
    "*": {"optimizer": "the trial's optimizer", "last_epoch": "the checkpoint, on resume"},
    "OneCycleLR": {"max_lr": "train.lr", "total_steps": "the budget (epochs, max_inputs or max_steps)",
                   "epochs": "the budget (total_steps is filled)", "steps_per_epoch": "the budget (total_steps is filled)"},
    "CyclicLR": {"max_lr": "train.lr"},
}
# Keywords no spec can give (their values are Python functions).
UNAVAILABLE = {"scale_fn": "it takes a Python function; use mode instead"}
# Keywords filled from the budget (in the scheduler's interval: steps or epochs) when a block leaves them out.
SCHEDULER_RUN_LENGTH = {"CosineAnnealingLR": "T_max", "PolynomialLR": "total_iters"}
# vitsweep's own keywords of a scheduler block (not torch's).
INTERVALS = ("step", "epoch")
PER_STEP = frozenset({"OneCycleLR", "CyclicLR"})  # torch's docs step these after every batch
PLATEAU = "ReduceLROnPlateau"
MONITOR_DEFAULT = "val_loss"

Kind = Literal["optimizer", "scheduler"]


class BlockError(ValueError):
    """A block that torch would not take; ``key`` is the keyword at fault (``name`` for the class)."""

    def __init__(self, key: str, msg: str) -> None:
        super().__init__(msg)
        self.key = key


@cache
def optimizer_names() -> tuple[str, ...]:
    """Every class of ``torch.optim`` a spec may name, sorted."""
    import torch.optim as optim

    names = [n for n in optim.__all__ if _subclass(getattr(optim, n, None), optim.Optimizer)]
    return tuple(sorted(n for n in names if n not in OPTIMIZER_EXCLUDED and n != "Optimizer"))


@cache
def scheduler_names() -> tuple[str, ...]:
    """Every class of ``torch.optim.lr_scheduler`` a spec may name, sorted."""
    from torch.optim import lr_scheduler

    bases = (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)
    names = [n for n in lr_scheduler.__all__ if _subclass(getattr(lr_scheduler, n, None), bases)]
    return tuple(sorted(n for n in names if n not in SCHEDULER_EXCLUDED and n not in ("LRScheduler", "_LRScheduler")))


def _subclass(obj: Any, base: type | tuple[type, ...]) -> bool:
    return isinstance(obj, type) and issubclass(obj, base)


def optimizer_class(name: str) -> type:
    """The ``torch.optim`` class ``name`` (whitelisted), e.g. ``AdamW``."""
    import torch.optim as optim

    _check_name("optimizer", name, optimizer_names(), OPTIMIZER_EXCLUDED)
    return getattr(optim, name)  # type: ignore[no-any-return]


def scheduler_class(name: str) -> type:
    """The ``torch.optim.lr_scheduler`` class ``name`` (whitelisted), e.g. ``OneCycleLR``."""
    from torch.optim import lr_scheduler

    _check_name("scheduler", name, scheduler_names(), SCHEDULER_EXCLUDED)
    return getattr(lr_scheduler, name)  # type: ignore[no-any-return]


def _check_name(kind: Kind, name: str, valid: tuple[str, ...], excluded: Mapping[str, str]) -> None:
    if name in valid:
        return
    if name in excluded:
        raise BlockError("name", f"{kind} {name!r} cannot be used from a spec: {excluded[name]}; valid: {', '.join(valid)}")
    namespace = "torch.optim" if kind == "optimizer" else "torch.optim.lr_scheduler"
    raise BlockError("name", f"unknown {kind} {name!r} (a class of {namespace}); valid: {', '.join(valid)}")


@cache
def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls).parameters)
    params.pop("self", None)
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def signature_default(cls: type, keyword: str) -> Any:
    """The default of ``keyword`` in ``cls``'s signature (``inspect.Parameter.empty`` if it has none or no such
    keyword): vitsweep's defaults are torch's."""
    param = _parameters(cls).get(keyword)
    return inspect.Parameter.empty if param is None else param.default


def takes(cls: type, keyword: str) -> bool:
    return keyword in _parameters(cls)


def owned_keywords(kind: Kind, name: str) -> dict[str, str]:
    """The keywords vitsweep passes for ``name``, each with where its value comes from."""
    if kind == "optimizer":
        return dict(OPTIMIZER_OWNED)
    return {**SCHEDULER_OWNED["*"], **SCHEDULER_OWNED.get(name, {})}


def own_keywords(kind: Kind, name: str) -> tuple[str, ...]:
    """vitsweep's own keywords of a block (not torch's): a scheduler's ``interval`` and a plateau's ``monitor``."""
    if kind == "optimizer":
        return ()
    return ("interval", "monitor") if name == PLATEAU else ("interval",)


def check_keywords(kind: Kind, name: str, keywords: Mapping[str, Any]) -> None:
    """Every keyword of a block is one the class takes and vitsweep does not own; required ones are given.

    Raises:
        BlockError: naming the keyword, with the valid ones (and the owned ones with where they come from).
    """
    cls = optimizer_class(name) if kind == "optimizer" else scheduler_class(name)
    params = _parameters(cls)
    owned = owned_keywords(kind, name)
    own = own_keywords(kind, name)
    settable = [n for n in params if n not in owned and n not in UNAVAILABLE]
    filled = ", ".join(f"{k} (from {v})" for k, v in owned.items() if k in params)
    for key in keywords:
        if key in own:
            continue
        if key in UNAVAILABLE and key in params:
            raise BlockError(key, f"{name}'s {key} cannot be given in a spec: {UNAVAILABLE[key]}")
        if key in owned and key in params:
            raise BlockError(key, f"{name}'s {key} is set by vitsweep from {owned[key]}; leave it out of the {kind} "
                                  f"block. vitsweep fills: {filled}")
        if key not in params:
            valid = ", ".join([*settable, *own])
            raise BlockError(key, f"{name} takes no keyword {key!r}; valid: {valid} (vitsweep fills {filled})")
    run_length = SCHEDULER_RUN_LENGTH.get(name) if kind == "scheduler" else None
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in owned and key != run_length and key not in keywords:
            raise BlockError(key, f"{name} needs {key!r}; give it in the {kind} block")
    if kind == "scheduler":
        interval = keywords.get("interval", default_interval(name))
        if interval not in INTERVALS:
            raise BlockError("interval", f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
        if name == PLATEAU and interval != "epoch":
            raise BlockError("interval", f"{PLATEAU} steps once per epoch on its monitored metric; interval must be epoch")


def default_interval(name: str) -> str:
    """How often a scheduler steps unless its block says: after every batch for OneCycleLR and CyclicLR (as
    torch's docs use them), once per epoch for the others (ReduceLROnPlateau always)."""
    return "step" if name in PER_STEP else "epoch"


def torch_value(value: Any) -> Any:
    """A JSON value as torch's constructors take it: lists become tuples (``betas: [0.9, 0.99]``)."""
    if isinstance(value, list):
        return tuple(torch_value(v) for v in value)
    return value


def construct(cls: type, first: Any, keywords: Mapping[str, Any]) -> Any:
    """``cls(first, **keywords)``, torch's own value checks included (``betas`` in range, ``anneal_strategy``
    one of its choices); its errors become a :class:`BlockError` naming the keyword they mention."""
    try:
        return cls(first, **keywords)
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError, ArithmeticError, AssertionError) as exc:
        raise BlockError(_culprit(str(exc), keywords), f"{cls.__name__} refuses these keywords: {exc}") from None


def _culprit(message: str, keywords: Mapping[str, Any]) -> str:
    """The keyword a torch error message names (``Invalid beta parameter`` names ``betas``), else ``""``."""
    text = message.lower()
    for key in sorted(keywords, key=len, reverse=True):  # max_lr before lr
        if key.lower() in text or (key.endswith("s") and key[:-1].lower() in text):
            return key
    return ""


# -- what a trial builds --------------------------------------------------------------------------------------

SHORT_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}


@dataclass(frozen=True)
class OptimizerRecipe:
    """A ``torch.optim`` class and its keywords, less the ones the builder passes (params, lr, fused).

    ``weight_decay`` is the decayed group's (the block's, else ``train.weight_decay``, else torch's default for
    the class); None where the class takes none. 1-d parameters get 0 unless ``decay_norm_and_bias``.
    """

    cls: type
    keywords: dict[str, Any]
    weight_decay: float | None


@dataclass(frozen=True)
class SchedulerRecipe:
    """A ``torch.optim.lr_scheduler`` class with every keyword but the optimizer, how often it steps, and (for
    ReduceLROnPlateau) the epoch metric it steps on."""

    cls: type
    keywords: dict[str, Any]
    interval: str
    monitor: str | None


def optimizer_recipe(train: Any) -> OptimizerRecipe:
    """What ``train`` (a ``TrainSpec``) builds: a short name as before, or its ``{name: ..., ...}`` block."""
    opt = train.optimizer
    if isinstance(opt, str):
        name = SHORT_OPTIMIZERS[opt]
        keywords: dict[str, Any] = {"momentum": train.momentum, "nesterov": train.nesterov} if opt == "sgd" else {}
    else:
        name, keywords = opt.name, {k: torch_value(v) for k, v in opt.keywords.items()}
    cls = optimizer_class(name)
    decay = keywords.pop("weight_decay", None)
    if decay is None:
        decay = train.weight_decay
    if not takes(cls, "weight_decay"):
        if decay is not None:
            raise BlockError("weight_decay", f"{name} takes no weight_decay; leave train.weight_decay unset")
        return OptimizerRecipe(cls, keywords, None)
    if decay is None:
        decay = signature_default(cls, "weight_decay")
    return OptimizerRecipe(cls, keywords, float(decay))


def scheduler_recipe(train: Any, *, total_steps: int, epochs: int) -> SchedulerRecipe | None:
    """The torch scheduler of ``train.scheduler``'s block over a run of ``total_steps`` optimizer steps in
    ``epochs`` epochs; None for the short names (their ``LambdaLR`` is built by the worker)."""
    block = train.scheduler
    if isinstance(block, str):
        return None
    name = block.name
    keywords = {k: torch_value(v) for k, v in block.keywords.items()}
    interval = keywords.pop("interval", default_interval(name))
    monitor = keywords.pop("monitor", MONITOR_DEFAULT) if name == PLATEAU else None
    length = total_steps if interval == "step" else epochs
    for key in owned_keywords("scheduler", name):
        if key == "max_lr":
            keywords[key] = train.lr
        elif key == "total_steps":
            keywords[key] = max(1, length)
    run_length = SCHEDULER_RUN_LENGTH.get(name)
    if run_length is not None and run_length not in keywords:
        keywords[run_length] = max(1, length)
    if name == PLATEAU and "mode" not in keywords:
        keywords["mode"] = "max" if str(monitor).endswith("_acc") else "min"
    return SchedulerRecipe(scheduler_class(name), keywords, interval, monitor)


def check_train(train: Any) -> None:
    """Build ``train``'s optimizer and scheduler on two throw-away parameters (a matrix and a bias), so that
    every value torch would refuse is refused at submission.

    Raises:
        BlockError: ``key`` is ``optimizer.<kw>``, ``scheduler.<kw>`` or a field of ``train``.
    """
    import torch

    def where(key: str, section: str) -> str:
        """A keyword of the block (``optimizer.betas``), or the field of ``train`` it came from."""
        block = getattr(train, section)
        if not isinstance(block, str):
            if key in block.keywords:
                return f"{section}.{key}"
            own = [k for k in block.keywords if k not in own_keywords(section, block.name)]  # type: ignore[arg-type]
            if not key and len(own) == 1:  # torch's message names no keyword, but only one was given
                return f"{section}.{own[0]}"
        return key if key and key in type(train).model_fields else section

    try:
        recipe = optimizer_recipe(train)
    except BlockError as exc:
        raise BlockError(where(exc.key, "optimizer"), str(exc)) from None
    groups: list[dict[str, Any]] = [{"params": [torch.nn.Parameter(torch.zeros(2, 2))]},
                                    {"params": [torch.nn.Parameter(torch.zeros(2))]}]
    if recipe.weight_decay is not None:
        groups[0]["weight_decay"], groups[1]["weight_decay"] = recipe.weight_decay, 0.0
    try:
        optimizer = construct(recipe.cls, groups, {"lr": train.lr, **recipe.keywords})
    except BlockError as exc:
        raise BlockError(where(exc.key, "optimizer"), str(exc)) from None
    sched = scheduler_recipe(train, total_steps=100, epochs=10)
    if sched is not None:
        try:
            construct(sched.cls, optimizer, sched.keywords)
        except BlockError as exc:
            raise BlockError(where(exc.key, "scheduler"), str(exc)) from None
