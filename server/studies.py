"""Optuna glue: one study per sweep in the store's own database, ask/tell from the workers.

Grids (a matrix, or the grid sampler) are fixed when the sweep is created; a worker asks Optuna for the
claimed row's values through ``PartialFixedSampler``, so the row and the Optuna trial can never disagree
even when many workers ask at once. Searches ask the spec's sampler at claim time, so TPE and friends see
every result finished so far.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial

from server.core.db import SQLITE_BUSY_MS, is_sqlite
from server.spec import EPOCH_METRICS, CategoricalParam, ExperimentSpec, FloatParam, IntParam, SearchSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

_PRIMITIVES = (type(None), bool, int, float, str)


class CachedStorage(optuna.storages._CachedStorage):
    """Optuna's RDB storage behind Optuna's own trial cache, kept for the life of the process.

    ``optuna.load_study`` wraps a bare ``RDBStorage`` in a fresh cache on every call, so each ask read every
    trial of the study back from the database: 0.7 s per ask at 2,000 trials, growing with each one. A cache
    that lives as long as the process reads a finished trial once (finished trials never change) and re-reads
    only new and running ones, which is safe with any number of processes writing the same study.
    """

    @property
    def engine(self) -> Any:
        return self._backend.engine


def make_storage(url: str) -> CachedStorage:
    """Optuna's RDB storage on the store's database (so optuna-dashboard can point at the same URL)."""
    if is_sqlite(url):
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_MS / 1000}}
    else:
        from server.core.db import make_engine

        url = make_engine(url).url.render_as_string(hide_password=False)  # normalise to psycopg 3
        engine_kwargs = {"pool_pre_ping": True}
    return CachedStorage(optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs))


def study_name(sweep_id: int, name: str) -> str:
    return f"vitsweep-{sweep_id}-{name}"


def create_study(storage: optuna.storages.BaseStorage, name: str, spec: ExperimentSpec, sweep_id: int) -> optuna.Study:
    """The sweep's study: one direction per objective (several for a multi-objective search)."""
    study = optuna.create_study(study_name=name, storage=storage, directions=spec.directions, load_if_exists=False)
    study.set_user_attr("vitsweep_sweep_id", sweep_id)
    study.set_user_attr("metric", spec.metric)
    if spec.multi_objective:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and the only way to name the objectives
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.objectives)  # optuna-dashboard labels the Pareto front's axes with these
    return study


def delete_study(storage: optuna.storages.BaseStorage, name: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass


def encode_choice(value: Any) -> Any:
    """Optuna categoricals take primitives only; lists and dicts travel as their JSON text."""
    return value if isinstance(value, _PRIMITIVES) else json.dumps(value, sort_keys=True)


def decode_value(dist: BaseDistribution, value: Any, original: list[Any] | None) -> Any:
    if isinstance(dist, CategoricalDistribution) and original is not None:
        for choice in original:
            if encode_choice(choice) == value:
                return choice
    return value


def distributions(spec: ExperimentSpec) -> dict[str, BaseDistribution]:
    """Optuna distributions of every searched path (a grid's axes as categoricals)."""
    if spec.is_grid:
        return {p: CategoricalDistribution([encode_choice(v) for v in vals]) for p, vals in spec.grid_axes().items()}
    assert spec.search is not None
    out: dict[str, BaseDistribution] = {}
    for path, d in spec.search.space.items():
        if isinstance(d, FloatParam):
            out[path] = FloatDistribution(d.low, d.high, log=d.log, step=d.step)
        elif isinstance(d, IntParam):
            out[path] = IntDistribution(d.low, d.high, log=d.log, step=d.step)
        else:
            out[path] = CategoricalDistribution([encode_choice(c) for c in d.choices])
    return out


def _choices(spec: ExperimentSpec) -> dict[str, list[Any]]:
    if spec.is_grid:
        return spec.grid_axes()
    assert spec.search is not None
    return {p: list(d.choices) for p, d in spec.search.space.items() if isinstance(d, CategoricalParam)}


def make_sampler(search: SearchSpec | None, trial_number: int, fixed: dict[str, Any] | None) -> optuna.samplers.BaseSampler:
    """The spec's sampler; each trial seeds it apart so concurrent workers don't suggest the same point."""
    if fixed is not None:
        with warnings.catch_warnings():  # experimental since Optuna 2.4, still the documented way to pin values
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.PartialFixedSampler(fixed, optuna.samplers.RandomSampler(seed=trial_number))
    assert search is not None
    options = dict(search.sampler_options)
    if "seed" in options and options["seed"] is not None:
        options["seed"] = int(options["seed"]) + trial_number
    factories: dict[str, Any] = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "gp": getattr(optuna.samplers, "GPSampler", None),
        "nsga2": optuna.samplers.NSGAIISampler,
    }
    factory = factories[search.sampler]
    if factory is None:
        raise ValueError(f"sampler {search.sampler!r} needs a newer Optuna")
    return factory(**options)


def make_pruner(search: SearchSpec | None) -> optuna.pruners.BasePruner:
    if search is None or search.pruner == "none":
        return optuna.pruners.NopPruner()
    options = dict(search.pruner_options)
    factories: dict[str, Any] = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    if search.pruner == "percentile":
        options.setdefault("percentile", 25.0)
    return factories[search.pruner](**options)


def load_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    spec: ExperimentSpec,
    *,
    trial_number: int = 0,
    fixed: dict[str, Any] | None = None,
) -> optuna.Study:
    return optuna.load_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(spec.search, trial_number, fixed),
        pruner=make_pruner(spec.search),
    )


TRIAL_ATTR = "vitsweep.trial_number"  # user attribute of an Optuna trial: the sweep trial (row) it belongs to


def create_trial(storage: optuna.storages.BaseStorage, name: str, number: int) -> tuple[int, int]:
    """The Optuna trial of the sweep's trial ``number``, created at most once: returns (trial id, Optuna number).

    Creating a trial and recording its id in the store are two databases' commits, so a worker can fail between
    them (the database restarts mid-call, the process is killed) and ask again. The new trial carries ``number``
    as a user attribute written in the same transaction that creates it, and a running trial that already
    carries it is handed back instead of creating another. Optuna retries a failed commit itself, and a commit
    whose answer was lost can have gone through: any duplicate that leaves is failed here, so the study holds
    exactly one live trial per sweep trial. Safe to call again after any error.
    """
    study_id = storage.get_study_id_from_name(name)
    mine = _running_trials_of(storage, study_id, number)
    if not mine:
        template = optuna.trial.FrozenTrial(
            number=-1, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=datetime.now(),
            datetime_complete=None, params={}, distributions={}, user_attrs={TRIAL_ATTR: number}, system_attrs={},
            intermediate_values={}, trial_id=-1,
        )
        storage.create_new_trial(study_id, template_trial=template)
        mine = _running_trials_of(storage, study_id, number)
    keep, *duplicates = sorted(mine, key=lambda t: t._trial_id)
    for extra in duplicates:
        storage.set_trial_state_values(extra._trial_id, optuna.trial.TrialState.FAIL)
    return keep._trial_id, keep.number


def _running_trials_of(storage: optuna.storages.BaseStorage, study_id: int, number: int) -> list[FrozenTrial]:
    running = storage.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return [t for t in running if t.user_attrs.get(TRIAL_ATTR) == number]


def suggest_params(
    storage: optuna.storages.BaseStorage,
    name: str,
    spec: ExperimentSpec,
    trial_id: int,
    *,
    trial_number: int,
    fixed: dict[str, Any] | None,
) -> tuple[optuna.Trial, dict[str, Any]]:
    """Sample the parameters of a created Optuna trial; returns it with the row's parameter values (decoded).

    Safe to call again: Optuna hands back the value a trial already holds for a parameter, so a retry after a
    failure sees the values of the first call.
    """
    dists = distributions(spec)
    encoded_fixed = {p: encode_choice(v) for p, v in fixed.items()} if fixed is not None else None
    study = load_study(storage, name, spec, trial_number=trial_number, fixed=encoded_fixed)
    trial = optuna.Trial(study, trial_id)
    if fixed is not None:
        for path, dist in dists.items():
            suggest(trial, path, dist)
        return trial, dict(fixed)  # exact values as written in the spec (e.g. 4 stays an int)
    choices = _choices(spec)
    params: dict[str, Any] = {}
    # model.name first: a model's own keywords (model.arch_by_model.<model>.*) are only suggested when that
    # model is chosen, so they are conditional parameters in Optuna and absent from other trials.
    for path in sorted(dists, key=lambda p: p != "model.name"):
        keys = path.split(".")
        if keys[:2] == ["model", "arch_by_model"] and params.get("model.name", spec.model.name) != keys[2]:
            continue
        params[path] = decode_value(dists[path], suggest(trial, path, dists[path]), choices.get(path))
    return trial, {p: params[p] for p in dists if p in params}


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """``trial.suggest_*`` for one of our distributions."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, CategoricalDistribution), dist
    return trial.suggest_categorical(name, dist.choices)


def reattach(storage: optuna.storages.BaseStorage, name: str, spec: ExperimentSpec, trial_id: int, number: int) -> optuna.Trial:
    """The running Optuna trial of a row being resumed after its worker died."""
    study = load_study(storage, name, spec, trial_number=number)
    return optuna.Trial(study, trial_id)


def tell(
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    state: optuna.trial.TrialState,
    value: float | Sequence[float] | None = None,
) -> None:
    """Finish an Optuna trial by id (idempotent: a trial already finished is left as it is).

    ``value`` is the objective, or every objective's value in order for a multi-objective study.
    """
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished():
        return
    values: list[float] | None = None
    if state == optuna.trial.TrialState.COMPLETE and value is not None:
        values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if state == optuna.trial.TrialState.COMPLETE and values is None:
        state = optuna.trial.TrialState.FAIL
    storage.set_trial_state_values(trial_id, state, values)


def objective_values(
    spec: ExperimentSpec, history: Sequence[Mapping[str, float]], figures: Mapping[str, Any]
) -> list[float] | None:
    """Every objective of a multi-objective trial that ended, or None for a single objective (or a value missing).

    Per-epoch metrics count at their best epoch (like the single objective); end-of-trial figures (params,
    seconds_per_epoch, ...) as the trial's final ``figures``.
    """
    if not spec.multi_objective:
        return None
    out: list[float] = []
    for name, direction in zip(spec.objectives, spec.directions, strict=True):
        if name in EPOCH_METRICS:
            seen = [float(h[name]) for h in history if h.get(name) is not None and math.isfinite(h[name])]
            value = (max if direction == "maximize" else min)(seen) if seen else None
        else:
            raw = figures.get(name)
            value = float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) else None
        if value is None:
            return None
        out.append(value)
    return out
