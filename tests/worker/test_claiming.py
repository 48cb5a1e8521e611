"""Atomic claiming: several real worker processes share one queue and every trial runs exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest

from tests.helpers import quick_spec

VITSWEEP = str(Path(sys.executable).parent / "vitsweep")


def _workers(n: int, env: dict[str, str], timeout: float) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen([VITSWEEP, "worker", "--devices", "cpu", "--burst"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for _ in range(n)
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_four_workers_run_forty_trials_exactly_once(client, settings, backends) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(name="claims", search={**quick_spec()["search"], "n_trials": 40})
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = _workers(4, env, timeout=600)
    for r in results:
        assert r.returncode == 0, r.stdout[-3000:]
    assert "database is locked" not in "".join(r.stdout for r in results)

    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    assert len(trials) == 40
    assert all(t["state"] == "completed" for t in trials), Counter(t["state"] for t in trials)
    assert all(t["attempts"] == 1 for t in trials)
    workers = Counter(t["worker_id"] for t in trials)
    assert len(workers) >= 2, workers  # the queue was really shared

    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    assert len(study.trials) == 40
    assert sorted(t["optuna_trial_number"] for t in trials) == list(range(40))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    runs = backends.tracker.client.search_runs(
        [backends.tracker.experiment_id], filter_string="tags.`vitsweep.kind` = 'trial'", max_results=1000
    )
    numbers = Counter(r.data.tags["vitsweep.trial_number"] for r in runs)
    assert len(runs) == 40 and set(numbers.values()) == {1}
    assert client.get(f"/api/v1/sweeps/{sweep['id']}").json()["state"] == "completed"
