"""A submission's plan check, off the event loop: the API keeps answering every other request meanwhile.

The check runs in a child process (:class:`~server.core.spec.isolation.PlanChecker`, with the settings' time
and memory budget), waited for in a worker thread. At most ``spec_checks`` run at once; a submission that waits
longer than one check's budget for its turn is answered 503 with Retry-After, so a burst of costly specs queues
neither threads nor processes without bound.
"""

from __future__ import annotations

import math

import anyio
from fastapi import FastAPI, Request

from server.core.config import Settings
from server.core.exceptions import BusyError
from server.core.spec import ExperimentSpec
from server.core.spec.isolation import CheckBudget, PlanChecker
from server.core.spec.plan import DataCheck

# The worker's registries, imported once by the fork server too, so that each check's child has them.
WORKER_PRELOAD = ("worker.catalog", "worker.data", "worker.augment")


def plan_checker(app: FastAPI) -> PlanChecker:
    """The app's checker, made on first use from its settings and catalog."""
    checker: PlanChecker | None = getattr(app.state, "plan_checker", None)
    if checker is None:
        settings: Settings = app.state.settings
        budget = CheckBudget(seconds=settings.spec_check_seconds, memory_bytes=settings.spec_check_memory_mb << 20)
        data = DataCheck(settings.datasets_dir, settings.download) if settings.check_data else None
        checker = app.state.plan_checker = PlanChecker(app.state.catalog, budget, preload=WORKER_PRELOAD, data=data)
    return checker


async def check_plan(request: Request, spec: ExperimentSpec) -> None:
    """Run the plan check of ``spec`` within the budget, in turn with other submissions' checks.

    Raises:
        SpecError: the spec cannot run (or its check ran out of time or memory).
        BusyError: every check slot stayed busy for a whole check's budget.
    """
    app = request.app
    settings: Settings = app.state.settings
    checker = plan_checker(app)
    limiter: anyio.CapacityLimiter | None = getattr(app.state, "plan_check_limiter", None)
    if limiter is None:  # made in the event loop: no await between the look-up and the assignment
        limiter = app.state.plan_check_limiter = anyio.CapacityLimiter(settings.spec_checks)
    with anyio.move_on_after(settings.spec_check_seconds) as waiting:
        await limiter.acquire()
    if waiting.cancelled_caught:
        raise BusyError(
            f"all {settings.spec_checks} spec checks stayed busy for {settings.spec_check_seconds:g} s; try again shortly",
            retry_after=math.ceil(settings.spec_check_seconds),
        )
    try:
        await anyio.to_thread.run_sync(checker.check, spec)
    finally:
        limiter.release()
