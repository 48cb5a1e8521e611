"""Plan checks in a child process with a time and a memory budget, so that no spec can stall or exhaust the API.

Building a model on PyTorch's meta device allocates no weights, but its modules still cost time and memory:
``num_layers: 10000`` takes seconds, a deep enough one never ends. :class:`PlanChecker` runs
:func:`~server.core.spec.plan.validate_plan` in a process forked from a fork server that imported torch and the
models once (a check starts in milliseconds), under an address-space limit, and kills it at its deadline; the
error then names the model that was being built.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from server.core.exceptions import BusyError, SpecError
from server.core.spec.catalog import Catalog
from server.core.spec.experiment import ExperimentSpec
from server.core.spec.plan import DataCheck, validate_plan

# What the fork server imports once, so that a check's child has them already: torch, the model registry, the
# upstream model code the registry imports only when a model is built, and Optuna (samplers' options are checked).
PRELOAD = ("torch", "vitmodels", "torchvision.models", "timm.models", "optuna", "server.core.spec.isolation")


@dataclass(frozen=True)
class CheckBudget:
    """What one submission's plan check may take: ``seconds`` of checking (the fork server's first start, which
    imports torch, is not counted; ``start_seconds`` bounds it) and ``memory_bytes`` more address space than the
    child starts with."""

    seconds: float = 10.0
    memory_bytes: int = 2 << 30
    start_seconds: float = 120.0


class CheckerCrashed(RuntimeError):
    """The check failed with an error of ours rather than the spec's (a bug: HTTP 500, logged with the trace)."""


class PlanChecker:
    """Runs plan checks in child processes forked from one fork server; :meth:`check` blocks (call it from a
    worker thread in async code)."""

    def __init__(
        self, catalog: Catalog, budget: CheckBudget, preload: Sequence[str] = (), data: DataCheck | None = None
    ) -> None:
        self.catalog = catalog
        self.budget = budget
        self.data = data  # where to check the plan's files, or None: the server does not see the data
        self._ctx = mp.get_context("forkserver")
        # The fork server is one per process; the first user's preload list is the one it starts with.
        self._ctx.set_forkserver_preload([*PRELOAD, *preload])

    def warm(self) -> None:
        """Start the fork server now (it imports torch and the models: seconds), not at the first submission."""
        proc = self._ctx.Process(target=_noop, daemon=True, name="vitsweep-plan-check-warmup")
        proc.start()
        proc.join(self.budget.start_seconds)
        if proc.is_alive():
            proc.kill()
            proc.join()

    def check(self, spec: ExperimentSpec) -> None:
        """:func:`validate_plan` of ``spec`` in a child process, within the budget.

        Raises:
            SpecError: the spec cannot run, or its check ran out of time or memory (naming the model being built).
            BusyError: the child did not start in ``start_seconds`` (the machine is overloaded).
            CheckerCrashed: the check failed with an unexpected error.
        """
        budget = self.budget
        receiver, sender = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child, args=(sender, spec, self.catalog, budget.memory_bytes, self.data), daemon=True,
            name="vitsweep-plan-check",
        )
        building: tuple[tuple[str | int, ...], str] | None = None
        try:
            proc.start()
            sender.close()  # the child holds the only sending end now: its exit is our end of file
            deadline = time.monotonic() + budget.start_seconds
            started = False
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not receiver.poll(remaining):
                    if not started:
                        raise BusyError(f"the spec check did not start within {budget.start_seconds:g} s; try again")
                    raise SpecError(*_over_budget(building, f"took longer than {budget.seconds:g} s"))
                try:
                    message = receiver.recv()
                except EOFError:
                    proc.join(5)
                    ended = f"ended without an answer ({_exit(proc.exitcode)})"
                    raise SpecError(*_over_budget(building, ended)) from None
                kind = message[0]
                if kind == "ready":
                    started = True
                    deadline = time.monotonic() + budget.seconds
                elif kind == "building":
                    building = (tuple(message[1]), message[2])
                elif kind == "ok":
                    return
                elif kind == "refused":
                    raise SpecError(tuple(message[1]), message[2])
                elif kind == "memory":
                    raise SpecError(*_over_budget(building, f"needed more than {budget.memory_bytes >> 20} MiB of memory"))
                else:
                    raise CheckerCrashed(f"the spec check failed: {message[1]}\n{message[2]}")
        finally:
            if proc.is_alive():
                proc.kill()
            if proc.pid is not None:
                proc.join(5)
            receiver.close()


def _over_budget(building: tuple[tuple[str | int, ...], str] | None, what: str) -> tuple[tuple[str | int, ...], str]:
    """The error for a check stopped at its budget: located at the model being built, if one was."""
    if building is None:
        return (), f"checking the spec {what}; no spec needs that much"
    loc, model = building
    return loc, (
        f"checking the spec {what} while building {model} on PyTorch's meta device; an architecture that costly "
        "to build is far too large to train"
    )


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        import signal

        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _noop() -> None:
    """A child that only proves the fork server is up."""


def _child(
    conn: Connection, spec: ExperimentSpec, catalog: Catalog, memory_bytes: int, data: DataCheck | None
) -> None:
    """A check's process: limit the address space, run the check, report each model before building it."""
    outcome: tuple[Any, ...] = ("ok",)
    try:
        _limit_memory(memory_bytes)
        conn.send(("ready",))
        validate_plan(spec, catalog, on_build=lambda loc, what: conn.send(("building", loc, what)), data=data)
    except SpecError as exc:
        outcome = ("refused", exc.loc, exc.msg)
    except MemoryError:
        outcome = ("memory",)
    except BaseException as exc:  # reported to the parent, which logs it; the process ends either way
        outcome = ("memory",) if _is_out_of_memory(exc) else ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
    # Sent once the exception (and with its traceback, the half-built model) is gone: out of memory, there is
    # room again to say so.
    conn.send(outcome)
    conn.close()


def _is_out_of_memory(exc: BaseException) -> bool:
    """PyTorch reports a failed host allocation as a RuntimeError (``std::bad_alloc``, or ``DefaultCPUAllocator:
    can't allocate memory``)."""
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("bad_alloc", "can't allocate memory"))


def _limit_memory(extra: int) -> None:
    """Let this process map at most ``extra`` bytes beyond what it has mapped now (RLIMIT_AS): a runaway build
    then fails with MemoryError instead of growing until the machine swaps."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

