"""Control-plane benchmark: how much time the service spends between trials, and whether that grows.

Runs ``--trials`` trivial trials with ``--workers`` worker processes on one backend (SQLite, or a fresh
PostgreSQL database created and dropped here). Each worker is the real ``Worker`` loop with the real
``TrialRunner``: claim, Optuna ask, MLflow run and params, attach, per-epoch MLflow metrics, checkpoint
sync, Optuna report and pruning, heartbeat, finish, Optuna tell, MLflow summary, artifacts and
termination. Only the model is left out: the training step is replaced by writing a small checkpoint and
reporting made-up metrics, so whatever time a trial takes is the control plane's.

Figures:
  * trial-to-trial gap: per worker, a trial's ``finished_at`` to the same worker's next ``started_at`` in
    the store (what the issue's goal is stated in), its median, and the median of the first 100 gaps
    against the last 100 (by time);
  * full gap: per worker, the end of a trial's training to the start of the next one's (everything the
    control plane does for a trial, claim to close, as the worker sees it);
  * total wall time and trials/s, and a breakdown per call (mean ms per trial);
  * logging overhead: ``Tracker.log_epoch`` plus ``queue.heartbeat`` (and Optuna report and pruning) per
    epoch, against a reference epoch and step.

Run from the repository root::

    .venv/bin/python bench/control_plane.py --backend sqlite --trials 2000 --workers 4
    .venv/bin/python bench/control_plane.py --backend postgresql --trials 2000 --workers 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

PG_ADMIN_URL = os.environ.get("VITSWEEP_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
GAP_GOAL_S = 0.2
DRIFT_GOAL = 1.5
LOGGING_GOAL = 0.01
# The anchor: ViT-tiny on CIFAR-10 (50,000 training images) at about 35,700 images/s, batch 512,
# on one H100: an epoch of 1.40 s made of 98 steps of 14.3 ms.
REF_EPOCH_IMAGES, REF_IMAGES_PER_S, REF_BATCH = 50_000, 35_700.0, 512


def trivial_spec(n_trials: int, epochs: int, sampler: str, pruner: str) -> dict[str, Any]:
    """A spec whose trials the bench never trains (the model is never built): only its plan matters."""
    return {
        "name": "bench-control-plane",
        "dataset": {"name": "synthetic", "img_size": 4, "options": {"num_samples": 16, "num_classes": 2}},
        "model": {"name": "cnn"},
        "train": {"epochs": epochs, "batch_size": 8, "svc_probe": False, "plots": False},
        "search": {
            "sampler": sampler,
            "sampler_options": {"seed": 0},
            "n_trials": n_trials,
            "pruner": pruner,
            "space": {
                "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
            },
        },
    }


# -- timing of the control plane's calls, inside each worker process -------------------------------------------


class PhaseTimer:
    """Wraps the control plane's functions to add up the seconds spent in each (thread-safe)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.epoch_logging: list[float] = []  # per epoch on the training thread: MLflow log_epoch + heartbeat
        self.epoch_optuna: list[float] = []  # per epoch on the training thread: Optuna report + should_prune
        self.trial: dict[str, float] = {}  # the running (or next) trial's seconds per call
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds
            self.calls[name] += 1
            self.trial[name] = self.trial.get(name, 0.0) + seconds

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start)

        setattr(owner, attr, timed)

    def install(self) -> None:
        import optuna

        from server.core import queue, studies
        from server.core.tracking import Tracker

        for owner, attr, name in (
            (queue, "claim", "claim"),
            (studies, "create_trial", "optuna create trial"),
            (queue, "bind", "bind"),
            (studies, "suggest_params", "optuna suggest"),
            (Tracker, "start_trial", "mlflow start run + params"),
            (queue, "attach", "attach"),
            (Tracker, "log_epoch", "mlflow log_epoch"),
            (optuna.Trial, "report", "optuna report"),
            (queue, "heartbeat", "heartbeat"),
            (optuna.Trial, "should_prune", "optuna should_prune"),
            (queue, "finish", "finish"),
            (studies, "tell", "optuna tell"),
            (Tracker, "log_summary", "mlflow summary"),
            (Tracker, "log_artifacts", "mlflow artifacts"),
            (Tracker, "finish_trial", "mlflow end run"),
            (queue, "reap_expired", "reap"),
        ):
            self.wrap(owner, attr, name)


# -- one worker process ----------------------------------------------------------------------------------------


def _undo_fixes() -> None:
    """The control plane as it was before issue 7, for before/after figures on the same machine and load: a
    fresh Optuna trial cache per ask (``optuna.load_study`` around a bare ``RDBStorage``), and MLflow epoch
    metrics sent on the training thread."""
    from server.core import studies
    from server.core.tracking import Tracker

    cached = studies.make_storage
    setattr(studies, "make_storage", lambda url: cached(url)._backend)  # noqa: B010
    setattr(Tracker, "start_background", lambda self: None)  # noqa: B010


def _worker_process(
    env: dict[str, str], slot: int, epochs: int, step_seconds: float, ready: Any, go: Any, out: str, before: bool
) -> None:
    """The real worker loop, with training replaced by a near-zero step; writes its timings to ``out``."""
    os.environ.update(env)
    if before:
        _undo_fixes()
    import torch

    torch.set_num_threads(1)
    from server.core.config import Settings
    from worker.engine.results import EpochReport, FitResult
    from worker.exceptions import TrialStopped
    from worker.training import TrainingJob
    from worker.trial import TrialRunner
    from worker.worker import Worker, WorkerOptions

    timer = PhaseTimer()
    records: list[dict[str, Any]] = []
    checkpoint_bytes = os.urandom(4096)

    def train(job: TrainingJob) -> Any:
        """Training replaced by a near-zero step: everything around it is the real path."""
        records[-1]["train_start"] = time.time()
        history: list[dict[str, float]] = []
        last = job.workdir / "last.pt"
        for epoch in range(job.epochs_done + 1, epochs + 1):
            if step_seconds:
                time.sleep(step_seconds)
            last.write_bytes(checkpoint_bytes)
            metrics = {"train_loss": 1.0 / epoch, "train_acc": 0.5, "val_loss": 1.0 / epoch,
                       "val_acc": 0.5 + 0.01 * epoch, "lr": 1e-3, "images_per_second": 1000.0,
                       "epoch_seconds": 0.01, "inputs_seen": 16.0 * epoch}
            history.append({"epoch": float(epoch), **metrics})
            before = dict(timer.seconds)
            job.on_epoch(EpochReport(epoch, dict(metrics), last))
            spent = {k: timer.seconds[k] - before.get(k, 0.0) for k in
                     ("mlflow log_epoch", "heartbeat", "optuna report", "optuna should_prune")}
            timer.epoch_logging.append(spent["mlflow log_epoch"] + spent["heartbeat"])
            timer.epoch_optuna.append(spent["optuna report"] + spent["optuna should_prune"])
            if job.stop():
                raise TrialStopped("stop requested")
        best = job.workdir / "best.pt"
        best.write_bytes(checkpoint_bytes)
        summary = {"param_count": 1000.0, "flops_per_image": 1e6, "peak_memory_bytes": 1e8, "best_val_acc": 0.51,
                   "best_epoch": float(epochs), "final_train_acc": 0.5, "final_val_acc": 0.51,
                   "final_val_loss": 1.0, "seconds_per_epoch": 0.01, "median_images_per_second": 1000.0,
                   "inputs_seen": 16.0 * epochs}
        records[-1]["train_end"] = time.time()
        return FitResult(history=history, best_val_acc=0.51, best_epoch=epochs, final=history[-1],
                         summary=summary, checkpoints={"best": best, "last": last})

    class TimedRunner(TrialRunner):
        """The real runner, with each trial's start and end times recorded."""

        def run(self, claim: Any) -> Any:
            # The claim that brought this trial was timed before it arrived, into the dict it now keeps.
            records.append({"trial_id": claim.row_id, "run_start": time.time(), "calls": timer.trial})
            state = super().run(claim)
            timer.trial = {}  # the next claim's calls count towards the next trial
            records[-1]["run_end"] = time.time()
            records[-1]["state"] = state.value if state is not None else None
            return state

    settings = Settings()
    worker = Worker(settings, WorkerOptions(device="cpu", slot=slot, burst=True))
    worker.runner = TimedRunner(worker.backends, settings, device=worker.device, worker_id=worker.worker_id,
                                shutdown=worker.runner.shutdown, train=train)
    timer.install()
    ready.put(slot)
    go.wait()
    started = time.time()
    worker.run()
    ended = time.time()
    flush = getattr(worker.backends.tracker, "flush", None)
    if flush is not None:
        flush()
    Path(out).write_text(json.dumps({
        "worker_id": worker.worker_id, "started": started, "ended": ended, "records": records,
        "seconds": dict(timer.seconds), "calls": dict(timer.calls), "epoch_logging": timer.epoch_logging,
        "epoch_optuna": timer.epoch_optuna,
    }))


# -- databases ---------------------------------------------------------------------------------------------------


@contextmanager
def databases(backend: str, home: Path) -> Iterator[tuple[str, str]]:
    """(store URL, MLflow tracking URI): SQLite files under ``home``, or fresh PostgreSQL databases (dropped after)."""
    if backend == "sqlite":
        yield f"sqlite:///{home / 'vitsweep.db'}", f"sqlite:///{home / 'mlflow.db'}"
        return
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    base = f"vitsweep_bench_{uuid.uuid4().hex[:10]}"
    names = [base, f"{base}_mlflow"]
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    prefix = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{prefix}/{names[0]}", f"{prefix}/{names[1]}"
    finally:
        for attempt in range(30):  # the server may be restarting (other work on the machine): keep trying
            try:
                with admin.connect() as conn:
                    for name in names:
                        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                break
            except sa.exc.OperationalError:
                if attempt == 29:
                    print(f"could not drop {names}; drop them by hand", file=sys.stderr)
                time.sleep(2)
        admin.dispose()


# -- figures -----------------------------------------------------------------------------------------------------


def gaps_by_worker(rows: list[tuple[str, float, float]]) -> list[tuple[float, float]]:
    """(time of the next start, gap) for every pair of consecutive trials of one worker.

    ``rows`` are (worker_id, start, end) in seconds; a worker's trials are ordered by start.
    """
    per_worker: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for worker_id, start, end in rows:
        per_worker[worker_id].append((start, end))
    out = []
    for trials in per_worker.values():
        trials.sort()
        for (_, prev_end), (next_start, _) in itertools.pairwise(trials):
            out.append((next_start, next_start - prev_end))
    out.sort()
    return out


def drift(gaps: list[tuple[float, float]], window: int = 100) -> tuple[float, float, float]:
    """Median gap of the first ``window`` gaps and of the last ``window`` (by time), and last / first."""
    window = max(1, min(window, len(gaps) // 2))
    first = statistics.median(g for _, g in gaps[:window])
    last = statistics.median(g for _, g in gaps[-window:])
    return first, last, (last / first if first > 0 else float("inf"))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def store_rows(db_url: str, sweep_id: int) -> list[tuple[str, float, float, str]]:
    from sqlalchemy import select

    from server.core.db import make_engine, make_session_factory
    from server.core.models import Trial

    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.execute(
                select(Trial.worker_id, Trial.started_at, Trial.finished_at, Trial.state).where(Trial.sweep_id == sweep_id)
            ).all()
    finally:
        engine.dispose()
    return [(r[0], r[1].timestamp(), r[2].timestamp(), r[3].value) for r in rows
            if r[0] is not None and r[1] is not None and r[2] is not None]


def run_backend(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"vitsweep-bench-{backend}-"))
    try:
        with databases(backend, home) as (db_url, tracking_uri):
            return _run(args, backend, home, db_url, tracking_uri)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


def _run(args: argparse.Namespace, backend: str, home: Path, db_url: str, tracking_uri: str) -> dict[str, Any]:
    import migrations
    from server.core.backends import make_backends
    from server.core.config import Settings
    from server.core.spec import ExperimentSpec
    from server.core.sweeps import create_sweep

    env = {
        "VITSWEEP_HOME": str(home),
        "VITSWEEP_DATABASE_URL": db_url,
        "VITSWEEP_MLFLOW_TRACKING_URI": tracking_uri,
        "VITSWEEP_MLFLOW_ARTIFACTS_DIR": str(home / "mlartifacts"),
        "VITSWEEP_POLL_SECONDS": str(args.poll_seconds),
        "OMP_NUM_THREADS": "1",
    }
    os.environ.update(env)
    settings = Settings()
    setup_start = time.perf_counter()
    migrations.upgrade(settings.db_url)
    backends = make_backends(settings)
    spec = ExperimentSpec.model_validate(trivial_spec(args.trials, args.epochs, args.sampler, args.pruner))
    sweep = create_sweep(backends, spec)
    backends.sessions.kw["bind"].dispose()
    print(f"[{backend}] sweep {sweep.id} with {args.trials} trials ready in {time.perf_counter() - setup_start:.1f}s; "
          f"starting {args.workers} workers", file=sys.stderr)

    ctx = mp.get_context("spawn")
    go, ready = ctx.Event(), ctx.Queue()
    outs = [home / f"worker{i}.json" for i in range(args.workers)]
    procs = [ctx.Process(target=_worker_process, args=(env, i, args.epochs, args.step_seconds, ready, go, str(out),
                                                         args.before_fixes))
             for i, out in enumerate(outs)]
    for p in procs:
        p.start()
    for _ in procs:  # the clock starts once every worker has imported torch, MLflow and Optuna
        ready.get(timeout=600)
    wall_start = time.time()
    go.set()
    for p in procs:
        p.join()
    wall = time.time() - wall_start
    load = os.getloadavg()[1]  # over the last 5 minutes: other work on the machine skews every figure
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} worker process(es) failed: exit codes {failed}")
    reports = [json.loads(out.read_text()) for out in outs]

    rows = store_rows(db_url, sweep.id)
    states: dict[str, int] = defaultdict(int)
    for *_, state in rows:
        states[state] += 1
    store_gaps = gaps_by_worker([(w, s, e) for w, s, e, _ in rows])
    full_rows = [(r["worker_id"], rec["train_start"], rec["train_end"])
                 for r in reports for rec in r["records"] if "train_start" in rec and "train_end" in rec]
    full_gaps = gaps_by_worker(full_rows)
    n_done = sum(len(r["records"]) for r in reports)
    seconds: dict[str, float] = defaultdict(float)
    for r in reports:
        for k, v in r["seconds"].items():
            seconds[k] += v
    per_trial_ms = {k: 1000 * v / max(1, n_done) for k, v in seconds.items()}
    epoch_logging = [x for r in reports for x in r["epoch_logging"]]
    epoch_optuna = [x for r in reports for x in r["epoch_optuna"]]
    by_start = sorted((rec for r in reports for rec in r["records"]), key=lambda rec: rec["run_start"])
    window = max(1, min(100, len(by_start) // 2))
    drift_ms = {
        name: (1000 * statistics.fmean(rec["calls"].get(name, 0.0) for rec in by_start[:window]),
               1000 * statistics.fmean(rec["calls"].get(name, 0.0) for rec in by_start[-window:]))
        for name in seconds
    }
    first, last, ratio = drift(store_gaps)
    ffirst, flast, fratio = drift(full_gaps)
    return {
        "backend": backend,
        "trials": args.trials,
        "workers": args.workers,
        "sampler": args.sampler,
        "pruner": args.pruner,
        "epochs": args.epochs,
        "before_fixes": args.before_fixes,
        "states": dict(states),
        "wall_s": wall,
        "load_avg_5min": load,
        "trials_per_s": len(rows) / wall,
        "gap_median_s": statistics.median(g for _, g in store_gaps),
        "gap_p90_s": _pct([g for _, g in store_gaps], 0.9),
        "gap_first_s": first,
        "gap_last_s": last,
        "gap_ratio": ratio,
        "full_gap_median_s": statistics.median(g for _, g in full_gaps),
        "full_gap_p90_s": _pct([g for _, g in full_gaps], 0.9),
        "full_gap_first_s": ffirst,
        "full_gap_last_s": flast,
        "full_gap_ratio": fratio,
        "per_trial_ms": per_trial_ms,
        "per_trial_ms_first_last": drift_ms,
        "epoch_logging_median_s": statistics.median(epoch_logging) if epoch_logging else float("nan"),
        "epoch_optuna_median_s": statistics.median(epoch_optuna) if epoch_optuna else float("nan"),
        "log_epoch_ms": 1000 * seconds["mlflow log_epoch"] / max(1, len(epoch_logging)),
        "heartbeat_ms": 1000 * seconds["heartbeat"] / max(1, len(epoch_logging)),
    }


def print_report(res: dict[str, Any]) -> None:
    ok = {True: "met", False: "NOT met"}
    print(f"\n== control plane: {res['backend']}, {res['trials']} trials, {res['workers']} workers, "
          f"sampler {res['sampler']}, pruner {res['pruner']}, {res['epochs']} epoch(s) per trial"
          f"{', BEFORE the fixes' if res['before_fixes'] else ''} ==")
    print(f"trials by state          {res['states']}")
    print(f"wall time                {res['wall_s']:.1f} s   ({res['trials_per_s']:.2f} trials/s; "
          f"5-minute load average at the end {res['load_avg_5min']:.1f})")
    print(f"{'':24} {'median':>8} {'p90':>8} {'first100':>9} {'last100':>9} {'last/first':>10}")
    print(f"{'gap (store) s':24} {res['gap_median_s']:8.3f} {res['gap_p90_s']:8.3f} {res['gap_first_s']:9.3f} "
          f"{res['gap_last_s']:9.3f} {res['gap_ratio']:10.2f}")
    print(f"{'full gap (worker) s':24} {res['full_gap_median_s']:8.3f} {res['full_gap_p90_s']:8.3f} "
          f"{res['full_gap_first_s']:9.3f} {res['full_gap_last_s']:9.3f} {res['full_gap_ratio']:10.2f}")
    print(f"time per trial by call (ms, mean over trials, summed over its calls):  {'all':>8} {'first100':>9} {'last100':>9}")
    for name, ms in sorted(res["per_trial_ms"].items(), key=lambda kv: -kv[1]):
        first_ms, last_ms = res["per_trial_ms_first_last"][name]
        print(f"  {name:70} {ms:8.1f} {first_ms:9.1f} {last_ms:9.1f}")
    per_epoch, optuna_epoch = res["epoch_logging_median_s"], res["epoch_optuna_median_s"]
    ref_epoch = REF_EPOCH_IMAGES / REF_IMAGES_PER_S
    steps = -(-REF_EPOCH_IMAGES // REF_BATCH)
    print(f"per epoch on the training thread, against a reference epoch of {ref_epoch:.2f} s ({steps} steps of "
          f"{1000 * ref_epoch / steps:.1f} ms: ViT-tiny on CIFAR-10 at {REF_IMAGES_PER_S:,.0f} images/s):")
    for label, value in (("logging: MLflow log_epoch + heartbeat", per_epoch),
                         ("Optuna report + should_prune", optuna_epoch),
                         ("the whole epoch callback", per_epoch + optuna_epoch)):
        print(f"  {label:40} {1000 * value:6.1f} ms median = {100 * value / ref_epoch:5.2f}% of the epoch, "
              f"{1000 * value / steps:.2f} ms per step")
    print(f"  (means: log_epoch {res['log_epoch_ms']:.1f} ms, heartbeat {res['heartbeat_ms']:.1f} ms)")
    print(f"goals: median gap <= {GAP_GOAL_S} s: {ok[res['gap_median_s'] <= GAP_GOAL_S]}; "
          f"last 100 within {DRIFT_GOAL}x of first 100: {ok[res['gap_ratio'] <= DRIFT_GOAL]}; "
          f"logging <= {100 * LOGGING_GOAL:.0f}% of the reference epoch: {ok[per_epoch / ref_epoch <= LOGGING_GOAL]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1, help="Epochs per trivial trial (each logs once)")
    parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    parser.add_argument("--pruner", choices=["none", "median"], default="median")
    parser.add_argument("--step-seconds", type=float, default=0.0, help="Sleep per epoch instead of training")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="VITSWEEP_POLL_SECONDS of the workers")
    parser.add_argument("--before-fixes", action="store_true",
                        help="Undo issue 7's control-plane fixes in the workers (for before/after figures)")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary home directory")
    args = parser.parse_args(argv)
    if args.trials < 2 or args.workers < 1:
        parser.error(f"need at least 2 trials and 1 worker, got {args.trials=} {args.workers=}")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}; {date.today().isoformat()}")
    results = []
    for backend in backends:
        res = run_backend(args, backend)
        print_report(res)
        results.append(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
