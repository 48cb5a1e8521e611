"""Optuna's side of a sweep, read back with Optuna's own client (``optuna.load_study``): the draws of differently
seeded sweeps, the values of pruned trials, the studies' metric names. On SQLite and PostgreSQL."""

from __future__ import annotations

import math

import optuna
import pytest

from server.core import studies, sweeps
from server.core.models import TrialState
from server.core.spec import ExperimentSpec
from tests.helpers import quick_spec

SPACE = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         "train.batch_size": {"type": "int", "low": 8, "high": 512}}


def _sweep(backends, seed: int | None, n: int = 6, sampler: str = "random"):  # type: ignore[no-untyped-def]
    options = {"seed": seed} if seed is not None else {}
    spec = quick_spec(search={"sampler": sampler, "sampler_options": options, "n_trials": n, "space": SPACE,
                              "pruner": "median"})
    return sweeps.create_sweep(backends, ExperimentSpec.model_validate(spec))


def _draw(backends, sweep) -> list[tuple[float, int]]:  # type: ignore[no-untyped-def]
    """Sample every trial of the sweep as workers do (create its Optuna trial, then suggest), in number order;
    the points as Optuna stored them."""
    spec = ExperimentSpec.model_validate(sweep.spec)
    for number in range(sweep.n_trials):
        trial_id, _ = studies.create_trial(backends.storage, sweep.study_name, number)
        studies.suggest_params(backends.storage, sweep.study_name, spec, trial_id, trial_number=number, fixed=None)
    study = optuna.load_study(study_name=sweep.study_name, storage=backends.storage)
    return [(t.params["train.lr"], t.params["train.batch_size"]) for t in sorted(study.trials, key=lambda t: t.number)]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_sweeps_draw_apart_unless_they_share_a_seed(backends, sampler: str) -> None:  # type: ignore[no-untyped-def]
    zero, one, zero_again = (_draw(backends, _sweep(backends, seed, sampler=sampler)) for seed in (0, 1, 0))
    assert zero == zero_again  # a seed still makes a sweep reproducible
    assert len(set(zero)) == len(zero)  # no two trials of a sweep share a point
    assert not set(zero) & set(one), (zero, one)  # seed + number made sweep 1's trial k sweep 0's trial k + 1


def test_trial_seeds_are_distinct_streams() -> None:
    from server.core.samplers import trial_seed

    seeds = {trial_seed(seed, number) for seed in range(20) for number in range(50)}
    assert len(seeds) == 20 * 50
    assert trial_seed(3, 7) == trial_seed(3, 7)
    with pytest.raises(ValueError, match="seed=-1"):
        trial_seed(-1, 0)


def test_pruned_trials_keep_their_last_value_as_optuna_does(backends) -> None:  # type: ignore[no-untyped-def]
    sweep = _sweep(backends, seed=0, n=4)
    spec = ExperimentSpec.model_validate(sweep.spec)
    ids = []
    for number in range(4):
        trial_id, _ = studies.create_trial(backends.storage, sweep.study_name, number)
        trial, _ = studies.suggest_params(backends.storage, sweep.study_name, spec, trial_id, trial_number=number,
                                          fixed=None)
        ids.append((trial, trial_id))
    reports = {0: [0.5, 0.869, 0.8], 1: [], 2: [0.4, 0.6], 3: [0.7]}
    for number, values in reports.items():
        for epoch, value in enumerate(values, 1):
            ids[number][0].report(value, epoch)
    # The worker's ends: pruned (no value passed: Optuna takes the last report), completed, and a NaN objective.
    for number in (0, 1):
        sweeps.close_trial(backends, optuna_trial_id=ids[number][1], run_id=None, state=TrialState.pruned)
    sweeps.close_trial(backends, optuna_trial_id=ids[2][1], run_id=None, state=TrialState.completed, values=0.6)
    sweeps.close_trial(backends, optuna_trial_id=ids[3][1], run_id=None, state=TrialState.completed,
                       values=float("nan"))
    sweeps.close_trial(backends, optuna_trial_id=ids[0][1], run_id=None, state=TrialState.failed)  # told again: kept

    study = optuna.load_study(study_name=sweep.study_name, storage=backends.storage)
    got = {t.number: (t.state, t.value) for t in study.trials}
    assert got == {0: (optuna.trial.TrialState.PRUNED, 0.8), 1: (optuna.trial.TrialState.PRUNED, None),
                   2: (optuna.trial.TrialState.COMPLETE, 0.6), 3: (optuna.trial.TrialState.FAIL, None)}
    # What Optuna's own tell(state=PRUNED) records for the same reports: the same value.
    reference = optuna.create_study(direction="maximize")
    for values in (reports[0], reports[1]):
        trial = reference.ask()
        for epoch, value in enumerate(values, 1):
            trial.report(value, epoch)
        reference.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert [t.value for t in reference.trials] == [got[0][1], got[1][1]]
    frame = study.trials_dataframe().set_index("number")
    assert frame.loc[0, "value_val_acc"] == 0.8 and frame.loc[0, "state"] == "PRUNED"
    assert math.isnan(frame.loc[1, "value_val_acc"])


def test_studies_carry_their_metric_names(backends) -> None:  # type: ignore[no-untyped-def]
    single = _sweep(backends, seed=0, n=1)
    multi = sweeps.create_sweep(backends, ExperimentSpec.model_validate(quick_spec(search={
        "sampler": "nsga2", "n_trials": 2, "metrics": ["val_acc", "param_count"], "directions": ["maximize", "minimize"],
        "space": SPACE})))
    assert optuna.load_study(study_name=single.study_name, storage=backends.storage).metric_names == ["val_acc"]
    assert optuna.load_study(study_name=multi.study_name, storage=backends.storage).metric_names == [
        "val_acc", "param_count"]
