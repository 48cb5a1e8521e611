"""MLflow layout: one parent run per sweep, one nested run per trial, params once, metrics with ``step``.

This is the only module that touches MLflow's client. Everything goes through an explicit ``MlflowClient`` (no global active run), so several trials can log from
one process and nothing leaks between them. Workers send per-epoch metrics from a background thread
(:meth:`Tracker.start_background`), so training never waits on the tracking store; ending a run or logging
its summary first waits for those (:meth:`Tracker.flush`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, SourceType
from mlflow.utils.mlflow_tags import (
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NOTE,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

TAG_SWEEP = "vitsweep.sweep_id"
TAG_TRIAL = "vitsweep.trial_number"
TAG_KIND = "vitsweep.kind"
TAG_STATE = "vitsweep.state"
TAG_ERROR = "vitsweep.error"
TAG_RESUMED_FROM = "vitsweep.resumed_from_epoch"
TAG_VERSION = "vitsweep.version"
# MLflow 3 opens an experiment by its kind: without one it shows the GenAI overview; this is its kind for
# training models, whose page is the runs table (the UI's own "machine learning" workflow).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SUMMARY_PREFIX = "summary/"  # MLflow's charts group metrics by prefix: the end-of-trial figures get their own
MODEL_NAME = "model"  # the logged PyTorch model of a trial's best checkpoint (runs:/<run_id>/model)
PRUNED_SUFFIX = " (pruned)"
MAX_PARAM_LEN = 6000
LOG_ATTEMPTS = 3  # a background metrics batch is tried this often before it is dropped (with a warning)
log = logging.getLogger(__name__)
Guard = Callable[[], bool]
"""Asked right before a deferred write: whether it may still be made (the writer still owns its trial)."""
_GLOBAL_URI = threading.Lock()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; lists stay whole."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def vitsweep_version() -> str:
    try:
        return version("vitsweep")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def runs_url(ui: str, experiment_id: str, sweep_id: int | None = None) -> str:
    """The MLflow UI's runs table of the experiment (MLflow 3's model-training view, not its GenAI overview),
    with ``sweep_id`` only that sweep's runs (its own and its trials')."""
    url = f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if sweep_id is not None:
        url += "&searchFilter=" + quote(f"tags.`{TAG_SWEEP}` = '{sweep_id}'", safe="")
    return url


def _source_tags(user: str | None) -> dict[str, str]:
    """What MLflow's runs table shows as a run's source and user: vitsweep and its version, who submitted."""
    name = f"vitsweep {vitsweep_version()}"
    tags = {MLFLOW_SOURCE_NAME: name, MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.JOB),
            TAG_VERSION: vitsweep_version()}
    if user:
        tags[MLFLOW_USER] = user
    return tags


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MAX_PARAM_LEN]


class Tracker:
    """Writes the sweep's runs to the MLflow tracking store at ``tracking_uri``."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        self.client = MlflowClient(tracking_uri)
        self._experiment_id: str | None = None
        self._pending: queue.Queue[tuple[str, list[Metric], Guard | None]] | None = None
        self._users: dict[str, str | None] = {}
        self._monitors: dict[str, Any] = {}
        _sqlite_wal(tracking_uri)

    # -- metrics off the training thread ----------------------------------------------------------------

    def start_background(self) -> None:
        """From now on, ``log_epoch`` queues its batch for a background thread and returns at once.

        Batches are sent one at a time in the order they were queued. A batch that fails ``LOG_ATTEMPTS``
        times is dropped with a warning: a tracking-store hiccup must not fail a trial that trains fine. A batch
        whose ``guard`` says no when its turn comes (the worker lost the trial meanwhile) is dropped unsent.
        """
        if self._pending is not None:
            return
        self._pending = queue.Queue()
        threading.Thread(target=self._send_pending, args=(self._pending,), daemon=True, name="mlflow-metrics").start()

    def _send_pending(self, pending: queue.Queue[tuple[str, list[Metric], Guard | None]]) -> None:
        while True:
            run_id, batch, guard = pending.get()
            try:
                if not _allowed(guard, run_id, batch):
                    continue
                for attempt in range(1, LOG_ATTEMPTS + 1):
                    try:
                        self.client.log_batch(run_id, metrics=batch)
                        break
                    except Exception:
                        if attempt == LOG_ATTEMPTS:
                            log.warning("dropped %d metric(s) of run %s (step %s) after %d attempts", len(batch), run_id,
                                        batch[0].step if batch else "?", attempt, exc_info=True)
                        else:
                            time.sleep(0.5 * attempt)
            finally:
                pending.task_done()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued metrics batch was sent (or dropped); False if ``timeout`` ran out first."""
        pending = self._pending
        if pending is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with pending.all_tasks_done:
            while pending.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                pending.all_tasks_done.wait(left)
        return True

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                self._experiment_id = found.experiment_id
                if TAG_EXPERIMENT_KIND not in found.tags:  # made by an older vitsweep; a kind set by hand stays
                    self.client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
            else:
                location = None
                if self.artifact_root is not None and not self.tracking_uri.startswith("http"):
                    location = (self.artifact_root / self.experiment_name).as_uri()
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment_name, artifact_location=location, tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
                    )
                except Exception:
                    # Another process created it between our lookup and create.
                    found = self.client.get_experiment_by_name(self.experiment_name)
                    if found is None:
                        raise
                    self._experiment_id = found.experiment_id
        return self._experiment_id

    # -- sweeps -----------------------------------------------------------------------------------------

    def start_sweep(
        self, sweep_id: int, name: str, spec: dict[str, Any], study_name: str, user: str | None = None
    ) -> str:
        """Open a sweep's parent run; ``user`` (who submitted it, where known) is its MLflow user, and its trials'."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{name}#{sweep_id}",
            tags={TAG_SWEEP: str(sweep_id), TAG_KIND: "sweep", "vitsweep.study": study_name, **_source_tags(user)},
        )
        run_id = run.info.run_id
        plan = {k: spec[k] for k in ("search", "matrix") if spec.get(k) is not None}
        params = {"dataset": spec["dataset"]["name"], "model": spec["model"]["name"], **flatten(plan)}
        self.client.log_batch(run_id, params=[Param(k, _param_text(v)) for k, v in params.items()][:100])
        self.client.log_text(run_id, yaml.safe_dump(spec, sort_keys=False), "spec.yaml")
        return run_id

    def reopen_sweep(self, run_id: str, state: str) -> None:
        """A completed sweep got more trials: its run is running again until they end."""
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, TAG_STATE, state)

    def finish_sweep(self, run_id: str, state: str, best: Mapping[str, float] | None = None) -> None:
        if best:
            self.client.log_batch(run_id, metrics=[Metric(f"best_{k}", float(v), _now_ms(), 0) for k, v in best.items()])
        self.client.set_tag(run_id, TAG_STATE, state)
        self.client.set_terminated(run_id, status=_run_status(state))

    # -- trials -----------------------------------------------------------------------------------------

    def start_trial(
        self, parent_run_id: str, sweep_id: int, number: int, run_name: str, resolved_spec: dict[str, Any],
        searched: Mapping[str, Any], *, reuse: bool = False,
    ) -> str:
        """Open a trial's run under its sweep's run and log its parameters and spec; returns the run id.

        ``reuse``: an earlier start of this trial may have created its run before failing (or its worker died
        before the store recorded the run id): that run is looked up by its tags and used again, so a trial
        never leaves a second run behind. Logging the same parameters again is a no-op in MLflow.
        """
        run_id = self._trial_run(parent_run_id, sweep_id, number) if reuse else None
        if run_id is None:
            run_id = self.client.create_run(
                self.experiment_id,
                run_name=run_name,
                tags={MLFLOW_PARENT_RUN_ID: parent_run_id, TAG_SWEEP: str(sweep_id), TAG_TRIAL: str(number),
                      TAG_KIND: "trial", **_source_tags(self._sweep_user(parent_run_id))},
            ).info.run_id
        body = {k: v for k, v in resolved_spec.items() if k in ("dataset", "model", "train")}
        params = flatten(body)
        params.update({f"searched.{k}": v for k, v in searched.items()})
        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i : i + 100])
        self.client.log_text(run_id, yaml.safe_dump(resolved_spec, sort_keys=False), "spec.yaml")
        return run_id

    def _sweep_user(self, parent_run_id: str) -> str | None:
        """The user of a sweep's parent run (who submitted the sweep), read once per sweep and process."""
        if not parent_run_id:
            return None
        if parent_run_id not in self._users:
            self._users[parent_run_id] = self.client.get_run(parent_run_id).data.tags.get(MLFLOW_USER)
        return self._users[parent_run_id]

    def _trial_run(self, parent_run_id: str, sweep_id: int, number: int) -> str | None:
        """The run an earlier start of this trial created, if any (the oldest, should there be more)."""
        conditions = [f"tags.`{TAG_SWEEP}` = '{sweep_id}'", f"tags.`{TAG_TRIAL}` = '{number}'",
                      f"tags.`{TAG_KIND}` = 'trial'"]
        if parent_run_id:  # sweep ids repeat across stores that share one MLflow experiment; parent runs do not
            conditions.append(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'")
        runs = self.client.search_runs([self.experiment_id], filter_string=" and ".join(conditions),
                                       order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, float], *, guard: Guard | None = None) -> None:
        """One epoch's metrics at ``step=epoch``; ``guard`` is asked right before they are sent (from the background
        thread, maybe a while later): False drops them, so a worker that lost its trial meanwhile logs nothing."""
        now = _now_ms()
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items() if v is not None]
        if self._pending is not None:
            self._pending.put((run_id, batch, guard))
        elif _allowed(guard, run_id, batch):
            self.client.log_batch(run_id, metrics=batch)

    def logged_steps(self, run_id: str, key: str, *, default: Iterable[int] = ()) -> set[int]:
        """The steps at which ``key`` was logged to the run (``default`` if MLflow cannot say)."""
        if not key:
            return set(default)
        try:
            return {m.step for m in self.client.get_metric_history(run_id, key)}
        except Exception:
            log.warning("could not read the metric history of run %s", run_id, exc_info=True)
            return set(default)

    def log_summary(self, run_id: str, summary: Mapping[str, float], step: int) -> None:
        """A trial's end-of-trial figures, as ``summary/<name>``: MLflow charts them in a section of their own,
        apart from the per-epoch curves (and a figure named like a per-epoch metric adds no point to its curve)."""
        self.flush()
        now = _now_ms()
        batch = [Metric(f"{SUMMARY_PREFIX}{k}", float(v), now, step) for k, v in summary.items()
                 if isinstance(v, (int, float))]
        self.client.log_batch(run_id, metrics=batch)

    def log_artifacts(self, run_id: str, files: Mapping[str, Path]) -> None:
        """``files`` maps an artifact sub-directory ("" for the root) to a file or directory."""
        for subdir, path in files.items():
            if Path(path).is_dir():
                self.client.log_artifacts(run_id, str(path), subdir or None)
            elif Path(path).exists():
                self.client.log_artifact(run_id, str(path), subdir or None)

    def finish_trial(self, run_id: str, state: str, error: str | None = None) -> None:
        """End a trial's run: FINISHED (completed, pruned), FAILED or KILLED (cancelled), tagged with its state and
        error; a run that did not complete says why in its description, and a pruned one in its name (MLflow
        has no pruned status, and its runs table shows names and statuses)."""
        self.stop_system_metrics(run_id)
        self.flush()  # the run's last epochs first, then its end
        tags = [RunTag(TAG_STATE, state)]
        if error:
            tags.append(RunTag(TAG_ERROR, error[:5000]))
        if state != "completed":
            why = f": {error[:5000]}" if error and error != state else ""
            tags.append(RunTag(MLFLOW_RUN_NOTE, f"**{state}**{why}"))
        self.client.log_batch(run_id, tags=tags)
        if state == "pruned":
            name = self.client.get_run(run_id).info.run_name or ""
            if not name.endswith(PRUNED_SUFFIX):
                self.client.update_run(run_id, name=name + PRUNED_SUFFIX)
        self.client.set_terminated(run_id, status=_run_status(state))

    # -- system metrics and the model -------------------------------------------------------------------

    def start_system_metrics(self, run_id: str, interval: float = 10.0) -> bool:
        """Log MLflow's own system metrics (CPU, memory, and with NVIDIA's ``nvidia-ml-py`` every GPU's utilisation
        and memory) to the run every ``interval`` seconds until it ends; False if MLflow cannot here."""
        if run_id in self._monitors:
            return True
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=True,
                                           tracking_uri=self.tracking_uri)
        except Exception:  # psutil missing, or the run unreadable: training goes on without them
            log.warning("no system metrics for run %s", run_id, exc_info=True)
            return False
        monitor.start()
        self._monitors[run_id] = monitor
        return True

    def stop_system_metrics(self, run_id: str) -> None:
        """Stop a run's system metrics, sending what was sampled (also when its trial goes back to the queue)."""
        monitor = self._monitors.pop(run_id, None)
        if monitor is not None:
            monitor.finish()

    def log_model(self, run_id: str, model: Any, example: Any, code_paths: Sequence[str] = ()) -> str:
        """Log ``model`` (a ``torch.nn.Module``) to the run as an MLflow PyTorch model, with the signature of
        ``example`` (one input batch) and its output; ``code_paths`` travel with it (the model zoo), so
        ``mlflow.pytorch.load_model("runs:/<run_id>/model")`` loads it anywhere torch is. Returns its URI."""
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        model.eval()
        with torch.no_grad():
            output = model(example)
        signature = infer_signature(example.cpu().numpy(), output.float().cpu().numpy())
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        # MLflow's model logging reads the process-wide tracking URI: this tracker's for the one call, switched
        # the way MLflow switches it itself (the global and MLFLOW_TRACKING_URI both restored afterwards).
        # Pickled, not MLflow's newer torch.export format: that traces the model, which not every family of the
        # zoo survives; the zoo's code travels with the model instead.
        # The logged model is made here, in the run's experiment (MLflow would put it in the active one).
        logged = self.client.create_logged_model(self.client.get_run(run_id).info.experiment_id, name=MODEL_NAME,
                                                 source_run_id=run_id, model_type="pytorch")
        with _GLOBAL_URI, _use_tracking_uri(self.tracking_uri):
            info = mlflow.pytorch.log_model(model, name=MODEL_NAME, run_id=run_id, model_id=logged.model_id,
                                            signature=signature, code_paths=list(code_paths) or None,
                                            pip_requirements=requirements, serialization_format="pickle")
        return str(info.model_uri)

    def resume_trial(self, run_id: str) -> None:
        """Mark a trial's run running again when another worker picks it up after a crash."""
        self.client.update_run(run_id, status="RUNNING")

    def mark_resumed(self, run_id: str, epoch: int) -> None:
        """Tag the run with the epoch its training resumed from."""
        self.client.set_tag(run_id, TAG_RESUMED_FROM, str(epoch))

    def download_checkpoint(self, run_id: str, name: str, dest: Path) -> Path | None:
        """The checkpoint ``checkpoints/<name>`` synced to the run, downloaded into ``dest``; None if the run has
        none (sync off, or the trial was stopped before its first epoch).

        An unreachable tracking server is raised (:func:`unreachable`), not taken for a run without a checkpoint.
        """
        try:
            return Path(self.client.download_artifacts(run_id, f"checkpoints/{name}", str(dest)))
        except Exception as exc:
            if unreachable(exc):
                raise
            log.info("run %s has no synced checkpoints/%s", run_id, name, exc_info=True)
            return None

    def metric_history(self, run_id: str, keys: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
        """Per metric key, the run's (step, value) pairs in step order."""
        return {k: sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, k)) for k in keys}


def _allowed(guard: Guard | None, run_id: str, batch: list[Metric]) -> bool:
    if guard is None:
        return True
    try:
        if guard():
            return True
    except Exception:  # a guard that cannot say yes (its store away) says no: a missing point beats a stale one
        log.warning("could not confirm the writer of run %s still owns it", run_id, exc_info=True)
    log.info("dropped %d metric(s) of run %s (step %s): its trial is no longer this worker's", len(batch), run_id,
             batch[0].step if batch else "?")
    return False


def unreachable(exc: BaseException) -> bool:
    """MLflow's client gave up reaching the tracking server (refused, timed out, or 5xx after its own retries).

    MLflow wraps the transport's error (a ``requests`` exception, kept as the cause or context) in a plain
    ``MlflowException``; a refusal with a reason (a bad parameter, a missing run) is a ``RestException``.
    """
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if not isinstance(exc, MlflowException) or isinstance(exc, RestException):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.RequestException):
            return True
        current = current.__cause__ or current.__context__
    return False


def _sqlite_wal(uri: str) -> None:
    """MLflow opens SQLite in rollback-journal mode, where one writer blocks every reader; many worker
    processes log at once, so switch the file to WAL (a persistent, per-database setting)."""
    if not uri.startswith("sqlite:///"):
        return
    import sqlite3

    from sqlalchemy.engine import make_url

    path = make_url(uri).database
    if not path or path == ":memory:":
        return
    with sqlite3.connect(path, timeout=60) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _run_status(state: str) -> str:
    return {"completed": "FINISHED", "pruned": "FINISHED", "cancelled": "KILLED"}.get(state, "FAILED")


def _now_ms() -> int:
    return int(time.time() * 1000)


def run_name(name: str, sweep_id: int, number: int, slug: str | None) -> str:
    return f"{name}#{sweep_id}/{number}" + (f" {slug}" if slug else "")
