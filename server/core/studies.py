"""Optuna: one study per sweep in the store's own database; trials created, sampled, reported and told here.

This is the only module that touches Optuna's storage. Grids (a matrix, or the grid sampler) are fixed when
the sweep is created; a worker asks Optuna for the claimed row's values through ``PartialFixedSampler``, so the
row and the Optuna trial can never disagree even when many workers ask at once. Searches sample at claim
time, so TPE and friends see every result finished so far.

Two ``TrialState`` enums meet here: the store's (:class:`server.core.models.TrialState`, what callers pass)
and Optuna's (``optuna.trial.TrialState``, always written out in full).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
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

from server.core.db import SQLITE_BUSY_MS, is_sqlite, make_engine
from server.core.models import TrialState
from server.core.samplers import make_fixed_sampler, make_pruner, make_sampler
from server.core.spec import CategoricalParam, ExperimentSpec, FloatParam, IntParam

optuna.logging.set_verbosity(optuna.logging.WARNING)

_PRIMITIVES = (type(None), bool, int, float, str)
TRIAL_ATTR = "vitsweep.trial_number"  # user attribute of an Optuna trial: the sweep trial (row) it belongs to
_OPTUNA_STATE = {
    TrialState.completed: optuna.trial.TrialState.COMPLETE,
    TrialState.pruned: optuna.trial.TrialState.PRUNED,
    TrialState.failed: optuna.trial.TrialState.FAIL,
    TrialState.cancelled: optuna.trial.TrialState.FAIL,
}


class CachedStorage(optuna.storages._CachedStorage):
    """Optuna's RDB storage behind Optuna's own trial cache, kept for the life of the process.

    ``optuna.load_study`` wraps a bare ``RDBStorage`` in a fresh cache on every call, so each ask read every
    trial of the study back from the database: 0.7 s per ask at 2,000 trials, growing with each one. A cache
    that lives as long as the process reads a finished trial once (finished trials never change) and re-reads
    only new and running ones, which is safe with any number of processes writing the same study. (The one
    use of Optuna's private names in vitsweep: the cache class has no public alias.)
    """

    @property
    def engine(self) -> Any:
        return self._backend.engine


def make_storage(url: str) -> CachedStorage:
    """Optuna's RDB storage on the store's database (so optuna-dashboard can point at the same URL)."""
    if is_sqlite(url):
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_MS / 1000}}
    else:
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
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and the only way to name the objectives
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # optuna-dashboard labels its plots (history, Pareto front's axes) with these, not "Objective 0"
        study.set_metric_names(spec.objectives)
    return study


def delete_study(storage: optuna.storages.BaseStorage, name: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass


def study_id(storage: optuna.storages.BaseStorage, name: str) -> int:
    """The study's id in the storage (optuna-dashboard's URLs use it)."""
    return storage.get_study_id_from_name(name)


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """A study as stored, for reading (reports, importances)."""
    return optuna.load_study(study_name=name, storage=storage)


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


def _study_for_trial(
    storage: optuna.storages.BaseStorage, name: str, spec: ExperimentSpec, *, trial_number: int,
    fixed: dict[str, Any] | None = None,
) -> optuna.Study:
    """The study with the sampler and pruner one trial samples and prunes with; each trial's sampler has a seed
    of its own (from the sweep's seed and the trial's number), so concurrent workers don't suggest the same point."""
    search = spec.search
    if fixed is not None:
        sampler = make_fixed_sampler(fixed, seed=trial_number)
    else:
        assert search is not None
        sampler = make_sampler(search.sampler, search.sampler_options, trial_number=trial_number)
    pruner = make_pruner(search.pruner, search.pruner_options) if search is not None else make_pruner("none", {})
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def create_trial(storage: optuna.storages.BaseStorage, name: str, number: int) -> tuple[int, int]:
    """The Optuna trial of the sweep's trial ``number``, created at most once: returns (trial id, Optuna number).

    Creating a trial and recording its id in the store are two databases' commits, so a worker can fail between
    them (the database restarts mid-call, the process is killed) and ask again. The new trial carries ``number``
    as a user attribute written in the same transaction that creates it, and a running trial that already
    carries it is handed back instead of creating another. Optuna retries a failed commit itself, and a commit
    whose answer was lost can have gone through: any duplicate that leaves is failed here, so the study holds
    exactly one live trial per sweep trial. Safe to call again after any error.
    """
    sid = storage.get_study_id_from_name(name)
    mine = _running_trials_of(storage, sid, number)
    if not mine:
        template = optuna.trial.FrozenTrial(
            number=-1, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=datetime.now(),
            datetime_complete=None, params={}, distributions={}, user_attrs={TRIAL_ATTR: number}, system_attrs={},
            intermediate_values={}, trial_id=-1,
        )
        storage.create_new_trial(sid, template_trial=template)
        mine = _running_trials_of(storage, sid, number)
    keep, *duplicates = sorted(mine, key=lambda t: t.number)  # numbers grow with creation, as ids do
    for extra in duplicates:
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(sid, extra.number),
                                       optuna.trial.TrialState.FAIL)
    return storage.get_trial_id_from_study_id_trial_number(sid, keep.number), keep.number


def _running_trials_of(storage: optuna.storages.BaseStorage, sid: int, number: int) -> list[FrozenTrial]:
    running = storage.get_all_trials(sid, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return [t for t in running if t.user_attrs.get(TRIAL_ATTR) == number]


def suggest_params(
    storage: optuna.storages.BaseStorage,
    name: str,
    spec: ExperimentSpec,
    optuna_trial_id: int,
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
    study = _study_for_trial(storage, name, spec, trial_number=trial_number, fixed=encoded_fixed)
    trial = optuna.Trial(study, optuna_trial_id)
    if fixed is not None:
        for path in fixed:  # a matrix include point may set only some of the grid's paths
            _suggest(trial, path, dists[path])
        return trial, dict(fixed)  # exact values as written in the spec (e.g. 4 stays an int)
    choices = _choices(spec)
    params: dict[str, Any] = {}
    # model.name first: a model's own keywords (model.arch_by_model.<model>.*) are only suggested when that
    # model is chosen, so they are conditional parameters in Optuna and absent from other trials.
    for path in sorted(dists, key=lambda p: p != "model.name"):
        keys = path.split(".")
        if keys[:2] == ["model", "arch_by_model"] and params.get("model.name", spec.model.name) != keys[2]:
            continue
        params[path] = decode_value(dists[path], _suggest(trial, path, dists[path]), choices.get(path))
    return trial, {p: params[p] for p in dists if p in params}


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """``trial.suggest_*`` for one of our distributions."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, CategoricalDistribution), dist
    return trial.suggest_categorical(name, dist.choices)


def reattach(
    storage: optuna.storages.BaseStorage, name: str, spec: ExperimentSpec, optuna_trial_id: int, number: int
) -> optuna.Trial:
    """The running Optuna trial of a row being resumed after its worker died."""
    return optuna.Trial(_study_for_trial(storage, name, spec, trial_number=number), optuna_trial_id)


def tell(
    storage: optuna.storages.BaseStorage,
    optuna_trial_id: int,
    state: TrialState,
    values: float | Sequence[float] | None = None,
) -> None:
    """Finish an Optuna trial by id as the store's ``state`` says (idempotent: a trial already finished is left
    as it is).

    ``values`` is the objective, or every objective's value in order for a multi-objective study; a completed
    trial without one, or with one that is not a number, is failed (Optuna's COMPLETE needs its values). A
    pruned trial gets the value ``Study.tell(state=PRUNED)`` gives it: its last reported intermediate value, so
    optuna-dashboard's history and ``trials_dataframe()`` show it. (``Study.tell`` itself needs the study, and
    the lease reaper and cancels close trials by id alone.)
    """
    frozen = storage.get_trial(optuna_trial_id)
    if frozen.state.is_finished():
        return
    optuna_state = _OPTUNA_STATE[state]
    told: list[float] | None = None
    if optuna_state == optuna.trial.TrialState.COMPLETE and values is not None:
        told = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if optuna_state == optuna.trial.TrialState.COMPLETE and (told is None or any(math.isnan(v) for v in told)):
        optuna_state, told = optuna.trial.TrialState.FAIL, None
    if optuna_state == optuna.trial.TrialState.PRUNED and frozen.last_step is not None:
        # Reports come for one objective only (multi-objective trials report none), as Optuna requires.
        last = float(frozen.intermediate_values[frozen.last_step])
        told = None if math.isnan(last) else [last]
    storage.set_trial_state_values(optuna_trial_id, optuna_state, told)


def importances(
    storage: optuna.storages.BaseStorage, name: str, *, multi_objective: bool
) -> tuple[dict[str, float] | None, str | None]:
    """Optuna's (fANOVA) parameter importances for the first objective, or None with the reason why not."""
    study = load_study(storage, name)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        return None, f"Parameter importances need at least 2 completed trials; this sweep has {len(done)}."
    target = (lambda t: t.values[0]) if multi_objective else None
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=target
        )
    except (ValueError, RuntimeError) as exc:  # e.g. no parameter varies across the completed trials
        return None, f"Parameter importances could not be computed: {exc}"
    if not found:
        return None, "Parameter importances: no parameter was searched in every completed trial."
    return dict(found), None
