"""The sweeper: recovers what dead workers held and what the broker lost (I3).

Runs in every worker's service thread, but at most one sweep is active at a time (an advisory lock on
PostgreSQL, the write lock on SQLite). Each pass:

- re-dispatches task steps taken by a worker whose heartbeat is older than ``worker_timeout`` (a
  ``kill -9`` costs seconds, not the broker's visibility timeout); after ``max_lost_attempts`` such
  losses of one step the run is parked as failed, so a step that kills its worker cannot loop forever;
- advances runs whose coordinator died holding their lease;
- advances active runs that nothing would move (a safety net; the outbox relay covers lost messages).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .store import queries
from .transitions import lost_attempt, redispatch, send_advance

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger("durable_tasks.recovery")



@dataclass
class SweepReport:
    redispatched: int = 0
    parked: int = 0
    leases_broken: int = 0
    stalled: int = 0


def sweep(durable: Durable, *, limit: int = 500) -> SweepReport:
    """One recovery pass; returns what it did."""
    report = SweepReport()
    settings = durable.settings
    with durable.unit_of_work() as uow:
        if not queries.try_sweeper_lock(uow.conn):
            return report
        now = time.time()
        cutoff = now - settings.worker_timeout
        live = queries.live_workers(uow.conn, cutoff)
        for step in queries.orphaned_steps(uow.conn, live, cutoff, limit):
            if lost_attempt(uow, step, settings.max_lost_attempts) is not None:
                send_advance(uow, step.run_id)  # the replay parks the run on the failed step
                report.parked += 1
            else:
                redispatch(uow, step, step.attempt + 1)
                report.redispatched += 1
            logger.warning("Step %r of run %s was held by dead worker %s.", step.step_key, step.run_id, step.worker)
        for run_id in queries.expired_leases(uow.conn, now, limit):
            queries.update_run(uow.conn, run_id, lease_owner=None, lease_until=None)
            send_advance(uow, run_id)
            report.leases_broken += 1
        for run_id in queries.stalled_runs(uow.conn, cutoff, limit):
            send_advance(uow, run_id)
            report.stalled += 1
        queries.forget_workers(uow.conn, now - 100 * settings.worker_timeout)
    if report.stalled:
        logger.warning("Sweeper advanced %d stalled run(s).", report.stalled)
    return report
