"""Where a reclaimed trial resumes from.

Every attempt at a trial (one claim by one worker) writes its checkpoints into a folder of its own under the
trial's (``attempts/<start time>-<pid>/``): a worker stalled past its lease and then continued can never
replace the checkpoint its trial's new owner wrote, whatever it does in the instant before it learns that the
trial was taken. A resume takes, of every readable ``last.pt`` (the attempts' and the copy synced to MLflow),
the one that matches the store's ``epochs_done`` (one epoch ahead too: its worker died between writing it and
reporting it), the newest attempt's where several do; a checkpoint that cannot be read is set aside (moved to
the trial's ``unreadable/`` folder) and the next one is tried.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.engine import checkpoint

log = logging.getLogger(__name__)

ATTEMPTS = "attempts"
UNREADABLE = "unreadable"
LAST, BEST = "last.pt", "best.pt"
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "inputs_seen", "history", "rng")


def new_attempt(trial_dir: Path, tag: str = "") -> Path:
    """A fresh folder for one attempt's files; names sort by start time (``tag`` marks a copy fetched from MLflow)."""
    folder = trial_dir / ATTEMPTS / f"{time.time_ns():020d}-{os.getpid()}{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class Found:
    """A readable ``last.pt``: where it is, what it holds, and which epoch it saved."""

    path: Path
    state: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    @property
    def folder(self) -> Path:
        return self.path.parent


def read_or_set_aside(path: Path, trial_dir: Path) -> dict[str, Any] | None:
    """The resumable state saved at ``path``, or None: a file that cannot be read (torn, garbage, not a ``last.pt``
    written by ``fit``) is moved to the trial's ``unreadable/`` folder, with a warning saying why."""
    try:
        state = checkpoint.read(path)
        missing = [k for k in RESUME_KEYS if k not in state]
        if missing:
            raise ValueError(f"not a resumable checkpoint: it lacks {', '.join(missing)}")
        return state
    except Exception as exc:
        aside = trial_dir / UNREADABLE / f"{time.time_ns():020d}-{path.parent.name}-{path.name}"
        try:
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, aside)
        except OSError:
            aside = path
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.warning("checkpoint %s cannot be read (%s: %s); set aside as %s", path, type(exc).__name__, reason[:300],
                    aside)
        return None


def local(trial_dir: Path, *, exclude: Path | None = None) -> list[Found]:
    """Every readable ``last.pt`` the trial's attempts on this machine left (oldest attempt first); a ``last.pt``
    directly in the trial's folder (written before attempts had folders of their own) counts as the oldest."""
    paths = [trial_dir / LAST, *sorted((trial_dir / ATTEMPTS).glob(f"*/{LAST}"))]
    out = []
    for path in paths:
        if path.is_file() and path.parent != exclude:
            state = read_or_set_aside(path, trial_dir)
            if state is not None:
                out.append(Found(path, state))
    return out


def choose(candidates: list[Found], epochs_done: int) -> Found | None:
    """The checkpoint to resume from: the latest epoch up to one past ``epochs_done``; of equals, the newest attempt's
    (``candidates`` come oldest first). One further ahead cannot come from the trial's owners: it is left alone."""
    usable = []
    for found in candidates:
        if found.epoch > epochs_done + 1:
            log.warning("checkpoint %s is at epoch %d, ahead of the store's %d; not used", found.path, found.epoch,
                        epochs_done)
        else:
            usable.append(found)
    best: Found | None = None
    for found in usable:
        if best is None or found.epoch >= best.epoch:
            best = found
    return best


def keep_only(trial_dir: Path, keep: set[Path]) -> None:
    """Remove the attempts' folders other than ``keep`` (and a ``last.pt``/``best.pt`` left in the trial's folder
    itself): once a resume point is chosen, the others only take disk space."""
    for folder in (trial_dir / ATTEMPTS).glob("*"):
        if folder.is_dir() and folder not in keep:
            shutil.rmtree(folder, ignore_errors=True)
    for name in (LAST, BEST):
        if (trial_dir / name).parent not in keep:
            (trial_dir / name).unlink(missing_ok=True)


def carry_best(found: Found, workdir: Path) -> Path | None:
    """Bring the resumed attempt's ``best.pt`` into this attempt's folder (a hard link where possible), so the trial
    ends with the best epoch's weights even if no later epoch beats it; None if it has none that fits."""
    source = found.folder / BEST
    if not source.is_file() or source.parent == workdir:
        return None
    try:
        saved = checkpoint.read(source)
    except Exception as exc:
        log.warning("best checkpoint %s cannot be read (%s); the trial keeps only later bests", source, exc)
        return None
    wanted = found.state.get("best_checkpoint_epoch", found.state.get("best_epoch"))
    if wanted is not None and saved.get("epoch") != wanted:
        log.warning("best checkpoint %s is of epoch %s, its last.pt's best is epoch %s; not carried over", source,
                    saved.get("epoch"), wanted)
        return None
    target = workdir / BEST
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target
