"""The API's own enforcement of sweep deadlines and trial leases, so they hold while no worker runs.

Workers do the same on their claim loop; both call the shared layer's :func:`server.core.sweeps.expire_deadlines`
and :func:`server.core.sweeps.reap_expired`, whose statements are safe to run from many processes at once.
"""

from __future__ import annotations

import asyncio
import logging

from server.core import sweeps
from server.core.backends import Backends
from server.core.config import Settings
from server.core.db import is_transient

log = logging.getLogger(__name__)


def enforce_once(backends: Backends, settings: Settings) -> None:
    """End sweeps past their timeout and requeue (or fail) the trials of workers whose lease ran out."""
    done = sweeps.expire_deadlines(backends)
    reaped = sweeps.reap_expired(backends, settings.max_attempts)
    if done.cancelled or done.ended_sweeps or reaped:
        log.info("timeouts ended sweeps %s (%d started trials cancelled); %d trials failed after lost leases",
                 done.ended_sweeps, len(done.cancelled), len(reaped))


async def enforce_limits(backends: Backends, settings: Settings) -> None:
    """Run :func:`enforce_once` every ``VITSWEEP_MAINTENANCE_SECONDS``, off the event loop, until cancelled."""
    while True:
        try:
            await asyncio.to_thread(enforce_once, backends, settings)
        except Exception as exc:  # the database away, say: the next round tries again
            away = is_transient(exc)
            log.warning("enforcing deadlines and leases failed%s; will try again",
                        " (database unavailable)" if away else "", exc_info=not away)
        await asyncio.sleep(settings.maintenance_seconds)
