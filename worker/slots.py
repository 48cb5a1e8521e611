"""How many trial slots a device gets: a fixed count, or ``auto``, which measures and grows.

``auto`` on a GPU starts with one slot, and once every slot has finished a trial at the current count it
compares the aggregate throughput with the count before: it adds a slot while throughput still rises by at
least ``min_gain`` and the projected memory (one more slot's peak plus its CUDA context) stays under
``memory_fraction`` of the device, and gives the last slot back if it made things slower. The figures are
the trials' own, from the store: ``median_images_per_second`` (median over epochs of ``images_per_second``, training steps only) and
``peak_memory_bytes``. On the CPU, ``auto`` is a fixed count: one slot per two cores.

The decision is a pure function of the measurements (:func:`decide`), so it is tested with made-up ones.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Union

SlotCount = Union[int, Literal["auto"]]
MAX_SLOTS = 64  # a fixed count's bound
AUTO_CAP = 8  # auto never goes above this many slots per device
MIN_GAIN = 0.05  # a new slot must raise aggregate images/s by at least this fraction to be worth keeping
MEMORY_FRACTION = 0.9  # of the device's memory, for the projected peak of one more slot
CONTEXT_BYTES = 512 * 2**20  # per-process memory the allocator's peak does not show: CUDA context, workspace


def parse_slots(value: str | int) -> SlotCount:
    """``"auto"`` or a whole number of slots per device, 1 to 64."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit():
            raise ValueError(f"slots per device must be a whole number or 'auto', got {value!r}")
        value = int(text)
    if not 1 <= value <= MAX_SLOTS:
        raise ValueError(f"slots per device must be between 1 and {MAX_SLOTS}, got {value}")
    return value


def cpu_slots(cores: int | None = None, cap: int = AUTO_CAP) -> int:
    """``auto`` on the CPU: one slot per two cores, at least one, at most ``cap``."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(cap, cores // 2))


@dataclass(frozen=True)
class Level:
    """What a device achieved with ``slots`` slots: aggregate images/s and the largest per-trial peak memory."""

    slots: int
    images_per_second: float
    peak_memory_bytes: float


@dataclass(frozen=True)
class Decision:
    action: Literal["grow", "hold", "shrink"]
    slots: int
    reason: str


def decide(
    levels: Sequence[Level], *, device_memory: float | None, cap: int = AUTO_CAP, min_gain: float = MIN_GAIN,
    memory_fraction: float = MEMORY_FRACTION, context_bytes: float = CONTEXT_BYTES,
) -> Decision:
    """The next slot count, from the measurements so far (oldest first; the last is the current count).

    ``hold`` and ``shrink`` are final: the caller stops measuring.
    """
    if not levels:
        raise ValueError("decide needs at least one measured level")
    now = levels[-1]
    if len(levels) >= 2:
        before = levels[-2]
        gain = now.images_per_second / before.images_per_second - 1 if before.images_per_second > 0 else float("inf")
        if gain < 0:
            return Decision("shrink", before.slots, f"{now.slots} slots gave {-gain:.0%} less throughput than "
                            f"{before.slots} ({now.images_per_second:,.0f} vs {before.images_per_second:,.0f} images/s)")
        if gain < min_gain:
            return Decision("hold", now.slots, f"{now.slots} slots gave only {gain:.1%} more throughput than "
                            f"{before.slots} ({now.images_per_second:,.0f} images/s); below {min_gain:.0%}")
    if now.slots >= cap:
        return Decision("hold", now.slots, f"at the cap of {cap} slots ({now.images_per_second:,.0f} images/s)")
    if device_memory is not None:
        projected = (now.slots + 1) * (now.peak_memory_bytes + context_bytes)
        if projected > memory_fraction * device_memory:
            return Decision("hold", now.slots, f"{now.slots + 1} slots would need about {projected / 2**30:.1f} GiB, "
                            f"over {memory_fraction:.0%} of the device's {device_memory / 2**30:.1f} GiB")
    return Decision("grow", now.slots + 1, f"{now.slots} slots: {now.images_per_second:,.0f} images/s; trying "
                    f"{now.slots + 1}")


@dataclass(frozen=True)
class TrialThroughput:
    """One finished trial's throughput and memory, as the auto mode reads them from the store."""

    worker_id: str
    started_at: datetime
    images_per_second: float
    peak_memory_bytes: float


def measure(
    trials: Iterable[TrialThroughput], slots: Mapping[Any, Collection[str]], since: datetime, *, min_trials: int = 1
) -> Level | None:
    """The level of ``slots`` (each slot's worker ids: a restarted slot has several) from their trials started at
    or after ``since``.

    ``None`` until every slot has finished ``min_trials`` such trials. Aggregate throughput is the sum over
    slots of each slot's median images/s; memory is the largest peak of any of those trials.
    """
    owner = {worker_id: key for key, ids in slots.items() for worker_id in ids}
    rates: dict[Any, list[float]] = defaultdict(list)
    peak = 0.0
    for t in trials:
        key = owner.get(t.worker_id)
        if key is not None and t.started_at >= since and t.images_per_second > 0:
            rates[key].append(t.images_per_second)
            peak = max(peak, t.peak_memory_bytes)
    if not slots or any(len(rates[key]) < min_trials for key in slots):
        return None
    return Level(len(slots), sum(statistics.median(rates[key]) for key in slots), peak)


class AutoSlots:
    """The ``auto`` state of one device: the levels measured so far and when the current one began."""

    def __init__(self, device_memory: float | None, *, cap: int = AUTO_CAP, min_gain: float = MIN_GAIN,
                 min_trials: int = 1) -> None:
        self.device_memory = device_memory
        self.cap, self.min_gain, self.min_trials = cap, min_gain, min_trials
        self.levels: list[Level] = []
        self.since: datetime | None = None
        self.settled = False

    def start_level(self, since: datetime) -> None:
        """A slot was added at ``since``: only trials started from then on measure the new count."""
        self.since = since

    def step(self, trials: Iterable[TrialThroughput], slots: Mapping[Any, Collection[str]]) -> Decision | None:
        """Measure the current count once every slot has finished a trial at it, and decide; else None."""
        if self.settled or self.since is None:
            return None
        level = measure(trials, slots, self.since, min_trials=self.min_trials)
        if level is None:
            return None
        self.levels.append(level)
        decision = decide(self.levels, device_memory=self.device_memory, cap=self.cap, min_gain=self.min_gain)
        self.settled = decision.action != "grow"
        return decision


def device_memory_bytes(device: str) -> float | None:
    """Total memory of ``cuda:N`` from ``nvidia-smi`` (so the supervisor never opens a CUDA context), else None."""
    if not device.startswith("cuda") or shutil.which("nvidia-smi") is None:
        return None
    index = device.partition(":")[2] or "0"
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and int(index) < len(visible):
        index = visible[int(index)]  # nvidia-smi counts physical devices (an index or a UUID both work)
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--id={index}", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
        return float(out.strip().splitlines()[0]) * 2**20  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
