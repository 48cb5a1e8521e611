"""Load: many worker processes on one queue, on PostgreSQL and on SQLite. Every trial exactly once, no
deadlock, no "database is locked" (the most reported failure of SQL-backed sweep tools)."""

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


@pytest.mark.slow
@pytest.mark.parametrize(
    "db_url,supervisors,slots,n_trials",
    [("postgresql", 2, 4, 200), ("sqlite", 1, 4, 200)],
    indirect=["db_url"],
)
def test_many_workers_each_trial_exactly_once(client, settings, backends, supervisors, slots, n_trials, tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = quick_spec(name="load", search={**quick_spec()["search"], "n_trials": n_trials})
    sweep = client.post("/api/v1/sweeps", json=spec).json()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Each supervisor's output goes to a file: a pipe read one process at a time fills up for the others, and a
    # worker writing its log then blocks (as it did once the trials logged MLflow models, with their warnings).
    logs = [tmp_path / f"worker-{i}.log" for i in range(supervisors)]
    procs = [
        subprocess.Popen([VITSWEEP, "worker", "--devices", "cpu", "--slots-per-device", str(slots), "--burst"],
                         env=env, stdout=path.open("w"), stderr=subprocess.STDOUT, text=True)
        for path in logs
    ]
    try:
        for p in procs:
            p.wait(timeout=900)  # a deadlock shows up as this timeout
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    log = "".join(path.read_text() for path in logs)
    assert all(p.returncode == 0 for p in procs), log[-3000:]
    assert "database is locked" not in log
    assert "Traceback" not in log, log[log.index("Traceback") - 200 :][:3000]

    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").json()
    states = Counter(t["state"] for t in trials)
    assert states == {"completed": n_trials}, states
    assert all(t["attempts"] == 1 for t in trials)
    workers = Counter(t["worker_id"] for t in trials)
    assert len(workers) == supervisors * slots, workers  # every process took a share

    study = optuna.load_study(study_name=sweep["study_name"], storage=backends.storage)
    assert len(study.trials) == n_trials
    assert sorted(t["optuna_trial_number"] for t in trials) == list(range(n_trials))
    runs = backends.tracker.client.search_runs(
        [backends.tracker.experiment_id], filter_string="tags.`vitsweep.kind` = 'trial'", max_results=5000
    )
    assert len(runs) == n_trials
    assert len({r.data.tags["vitsweep.trial_number"] for r in runs}) == n_trials
