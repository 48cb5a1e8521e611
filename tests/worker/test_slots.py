"""Slots per device: parsing ``auto``, and the auto mode's decisions from made-up measurements."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from worker.slots import (
    CONTEXT_BYTES,
    AutoSlots,
    Level,
    TrialThroughput,
    cpu_slots,
    decide,
    measure,
    parse_slots,
)

GiB = 2**30
T0 = datetime(2026, 11, 25, tzinfo=timezone.utc)


@pytest.mark.parametrize("text,expected", [("auto", "auto"), ("AUTO", "auto"), (" 3 ", 3), ("1", 1), ("64", 64), (2, 2)])
def test_parse_slots(text, expected) -> None:  # type: ignore[no-untyped-def]
    assert parse_slots(text) == expected


@pytest.mark.parametrize("text", ["0", "65", "-1", "two", "", "1.5", "auto2"])
def test_parse_slots_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="slots per device"):
        parse_slots(text)


@pytest.mark.parametrize("cores,slots", [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8), (64, 8)])
def test_cpu_auto_is_one_slot_per_two_cores(cores: int, slots: int) -> None:
    assert cpu_slots(cores) == slots


def test_first_level_grows() -> None:
    d = decide([Level(1, 7000, 2 * GiB)], device_memory=80 * GiB)
    assert (d.action, d.slots) == ("grow", 2)


def test_grows_while_throughput_rises_enough() -> None:
    levels = [Level(1, 30_000, 2 * GiB), Level(2, 45_000, 2 * GiB), Level(3, 55_000, 2 * GiB)]
    assert decide(levels, device_memory=80 * GiB).action == "grow"
    assert decide(levels, device_memory=80 * GiB).slots == 4


def test_holds_when_gain_below_five_percent() -> None:
    d = decide([Level(1, 30_000, GiB), Level(2, 50_000, GiB), Level(3, 51_000, GiB)], device_memory=80 * GiB)
    assert (d.action, d.slots) == ("hold", 3)
    assert "2.0%" in d.reason


def test_shrinks_when_the_last_slot_made_it_slower() -> None:
    d = decide([Level(1, 30_000, GiB), Level(2, 50_000, GiB), Level(3, 45_000, GiB)], device_memory=80 * GiB)
    assert (d.action, d.slots) == ("shrink", 2)


def test_holds_when_one_more_slot_would_not_fit() -> None:
    per_trial = 20 * GiB
    d = decide([Level(1, 30_000, per_trial), Level(2, 50_000, per_trial), Level(3, 60_000, per_trial)],
               device_memory=80 * GiB)
    # 4 x (20 GiB + context) > 72 GiB (90% of 80)
    assert (d.action, d.slots) == ("hold", 3)
    assert "GiB" in d.reason
    fits = (80 * GiB * 0.9) / 4 - CONTEXT_BYTES - 1
    assert decide([Level(3, 60_000, fits)], device_memory=80 * GiB).action == "grow"


def test_holds_at_the_cap_and_without_memory_figures_grows() -> None:
    assert decide([Level(8, 60_000, GiB)], device_memory=None).action == "hold"
    assert decide([Level(2, 60_000, 100 * GiB)], device_memory=None).action == "grow"
    assert decide([Level(3, 60_000, GiB)], device_memory=None, cap=3).action == "hold"


def test_decide_needs_a_level() -> None:
    with pytest.raises(ValueError):
        decide([], device_memory=None)


def _trial(worker: str, minutes: float, ips: float, peak: float = GiB) -> TrialThroughput:
    return TrialThroughput(worker, T0 + timedelta(minutes=minutes), ips, peak)


def test_measure_waits_for_every_slot_and_sums_medians() -> None:
    slots = {0: ["h:1:cuda:0:0"], 1: ["h:2:cuda:0:1", "h:3:cuda:0:1"]}  # slot 1 was restarted once
    trials = [
        _trial("h:1:cuda:0:0", -1, 99_999),  # before the level began: ignored
        _trial("h:1:cuda:0:0", 1, 10_000),
        _trial("h:1:cuda:0:0", 2, 12_000),
        _trial("h:1:cuda:0:0", 3, 50_000, peak=3 * GiB),
        _trial("h:9:cuda:0:0", 1, 77_777),  # another supervisor's slot
    ]
    assert measure(trials, slots, T0) is None  # slot 1 has no trial yet
    trials.append(_trial("h:3:cuda:0:1", 4, 8_000))
    level = measure(trials, slots, T0)
    assert level == Level(2, 12_000 + 8_000, 3 * GiB)


def test_auto_slots_grows_then_settles() -> None:
    auto = AutoSlots(80 * GiB)
    auto.start_level(T0)
    one = {0: ["a"]}
    assert auto.step([], one) is None
    d = auto.step([_trial("a", 1, 20_000)], one)
    assert d is not None and (d.action, d.slots) == ("grow", 2)
    auto.start_level(T0 + timedelta(minutes=10))
    two = {0: ["a"], 1: ["b"]}
    old = [_trial("a", 1, 20_000)]
    assert auto.step(old, two) is None  # nothing yet at two slots
    d = auto.step([*old, _trial("a", 11, 15_000), _trial("b", 12, 15_000)], two)
    assert d is not None and (d.action, d.slots) == ("grow", 3)
    auto.start_level(T0 + timedelta(minutes=20))
    three = {0: ["a"], 1: ["b"], 2: ["c"]}
    d = auto.step([_trial("a", 21, 10_300), _trial("b", 21, 10_300), _trial("c", 22, 10_300)], three)
    assert d is not None and (d.action, d.slots) == ("hold", 3)  # 30,900 vs 30,000: +3%
    assert auto.settled
    assert auto.step([_trial("a", 31, 1.0)], three) is None


def test_supervisor_starts_auto_with_one_slot_per_gpu_and_cpu_share(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import supervisor as sup

    monkeypatch.setattr(sup, "cpu_slots", lambda: 2)
    s = sup.Supervisor.__new__(sup.Supervisor)
    s.options = sup.SupervisorOptions(devices=["cpu", "cuda:0", "cuda:1"], slots_per_device="auto")
    slots = s._slots()
    assert [(w.device, w.slot) for w in slots] == [("cpu", 0), ("cpu", 1), ("cuda:0", 0), ("cuda:1", 0)]
    s.options = sup.SupervisorOptions(devices=["cuda:0"], slots_per_device=3)
    assert [(w.device, w.slot) for w in s._slots()] == [("cuda:0", 0), ("cuda:0", 1), ("cuda:0", 2)]


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("4", 4)])
def test_worker_cli_takes_auto(monkeypatch: pytest.MonkeyPatch, value: str, expected: object) -> None:
    from server.cli import app
    from worker import supervisor as sup

    seen = {}

    def fake_run(settings, options):  # type: ignore[no-untyped-def]
        seen["options"] = options
        return 0

    monkeypatch.setattr(sup, "run_supervisor", fake_run)
    result = CliRunner().invoke(app, ["worker", "--devices", "cpu", "--slots-per-device", value, "--burst"])
    assert result.exit_code == 0, result.output
    assert seen["options"].slots_per_device == expected


def test_worker_cli_refuses_bad_slots() -> None:
    from server.cli import app

    result = CliRunner().invoke(app, ["worker", "--devices", "cpu", "--slots-per-device", "lots"])
    assert result.exit_code == 2
    assert "slots per device" in result.output


class _FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_autoscale_reads_the_store_and_adds_a_slot(settings, backends, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import os
    import socket

    from sqlalchemy import update

    from server.core.db import write_session
    from server.core.models import Trial, TrialState, utcnow
    from server.core.spec import ExperimentSpec
    from server.core.sweeps import create_sweep
    from tests.helpers import quick_spec
    from worker import supervisor as sup
    from worker.worker import Worker, WorkerOptions

    # The supervisor names its slots' trials the way Worker names itself.
    assert Worker(settings, WorkerOptions(device="cpu", slot=3), backends).worker_id == (
        f"{socket.gethostname()}:{os.getpid()}:cpu:3")

    sweep = create_sweep(backends, ExperimentSpec.model_validate(quick_spec()))
    level_start = utcnow()
    s = sup.Supervisor(settings, sup.SupervisorOptions(devices=["cuda:0"], slots_per_device="auto"))
    slots = s._slots()
    assert [(w.device, w.slot) for w in slots] == [("cuda:0", 0)]
    spawned: list[tuple[str, int]] = []

    def fake_spawn(slot, threads):  # type: ignore[no-untyped-def]
        spawned.append((slot.device, slot.slot))
        return _FakeProc(4242)

    monkeypatch.setattr(s, "_spawn", fake_spawn)
    procs = {0: _FakeProc(1234)}
    pids = {0: [1234]}
    auto = {"cuda:0": AutoSlots(80 * GiB)}
    auto["cuda:0"].start_level(level_start)
    s._autoscale(auto, backends.sessions, slots, procs, pids, set(), 1)  # type: ignore[arg-type]
    assert spawned == []  # no finished trial yet

    with write_session(backends.sessions) as session:
        session.execute(
            update(Trial).where(Trial.sweep_id == sweep.id, Trial.number == 0).values(
                state=TrialState.completed, device="cuda:0", worker_id=f"{socket.gethostname()}:1234:cuda:0:0",
                started_at=utcnow(), finished_at=utcnow(),
                metrics={"images_per_second": 30_000.0, "peak_memory_bytes": float(2 * GiB)},
            )
        )
    s._autoscale(auto, backends.sessions, slots, procs, pids, set(), 1)  # type: ignore[arg-type]
    assert spawned == [("cuda:0", 1)]
    assert [(w.device, w.slot) for w in slots] == [("cuda:0", 0), ("cuda:0", 1)]
    assert pids[1] == [4242] and auto["cuda:0"].levels == [Level(1, 30_000.0, float(2 * GiB))]


def test_slot_threads_share_the_cores_capped_by_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.supervisor import slot_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert [slot_threads(n, env={}) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert slot_threads(1, env={"OMP_NUM_THREADS": "2"}) == 2  # the cap of a process beside other jobs
    assert slot_threads(8, env={"OMP_NUM_THREADS": "2"}) == 1  # never more than the share
    assert slot_threads(2, env={"OMP_NUM_THREADS": ""}) == slot_threads(2, env={"OMP_NUM_THREADS": "0"}) == 4
    assert slot_threads(2, env={"OMP_NUM_THREADS": "many"}) == 4
