"""Optuna samplers and pruners by the spec's names, with the spec's options as their own keywords.

Kept apart from :mod:`server.core.studies` (which holds the study and its storage) so that the spec can build
them at submission, to refuse options they do not take, without importing the study machinery.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import numpy as np
import optuna

SamplerName = Literal["tpe", "random", "cmaes", "gp", "nsga2", "grid"]
PrunerName = Literal["none", "median", "percentile", "successive_halving", "hyperband"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
PRUNERS: tuple[str, ...] = get_args(PrunerName)

_SAMPLER_FACTORIES: dict[str, Callable[..., optuna.samplers.BaseSampler] | None] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": getattr(optuna.samplers, "GPSampler", None),
    "nsga2": optuna.samplers.NSGAIISampler,
}
_PRUNER_FACTORIES: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}


def trial_seed(seed: int, trial_number: int) -> int:
    """The seed one trial's sampler draws with: a child of the sweep's ``seed`` spawned for ``trial_number``
    (NumPy's ``SeedSequence``), so every (seed, trial) pair has a stream of its own: two sweeps share draws only
    when they share a seed, and no trial repeats another's (``seed + number`` made sweep 1's trial k sweep 0's
    trial k + 1)."""
    if seed < 0 or trial_number < 0:
        raise ValueError(f"seeds and trial numbers are non-negative, got {seed=} and {trial_number=}")
    return int(np.random.SeedSequence(seed, spawn_key=(trial_number,)).generate_state(1)[0])


def make_sampler(
    name: str, options: Mapping[str, Any], *, trial_number: int | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` with ``options``; with ``trial_number``, a ``seed`` option becomes that trial's own
    seed (:func:`trial_seed`), so trials sampled by different processes do not draw the same point.

    Raises:
        ValueError: an unknown sampler (the grid is not one: grids fix every trial's values up front).
        TypeError: an option the sampler does not take.
    """
    if name not in _SAMPLER_FACTORIES:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(_SAMPLER_FACTORIES)}")
    factory = _SAMPLER_FACTORIES[name]
    if factory is None:
        raise ValueError(f"sampler {name!r} needs a newer Optuna")
    kwargs = dict(options)
    if kwargs.get("seed") is not None and trial_number is not None:
        kwargs["seed"] = trial_seed(int(kwargs["seed"]), trial_number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # gp and friends are experimental
        return factory(**kwargs)


def make_fixed_sampler(fixed: Mapping[str, Any], *, seed: int = 0) -> optuna.samplers.BaseSampler:
    """A sampler that hands out exactly ``fixed`` (a grid point): ``PartialFixedSampler`` over a random one."""
    with warnings.catch_warnings():  # experimental since Optuna 2.4, still the documented way to pin values
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.PartialFixedSampler(dict(fixed), optuna.samplers.RandomSampler(seed=seed))


def make_pruner(name: str, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner ``name`` with ``options`` (``none``: never prunes).

    Raises:
        ValueError: an unknown pruner or a bad option value; TypeError: an option the pruner does not take.
    """
    if name == "none":
        return optuna.pruners.NopPruner()
    if name not in _PRUNER_FACTORIES:
        raise ValueError(f"unknown pruner {name!r}; valid: none, {', '.join(_PRUNER_FACTORIES)}")
    kwargs = dict(options)
    if name == "percentile":
        kwargs.setdefault("percentile", 25.0)
    return _PRUNER_FACTORIES[name](**kwargs)
