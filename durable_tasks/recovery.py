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

from . import event_transitions, transitions
from .runtime import Runtime
from .store import health_queries, queries

logger = logging.getLogger("durable_tasks.recovery")


@dataclass
class SweepReport:
    """What one sweep did."""

    redispatched: int = 0
    parked: int = 0
    leases_broken: int = 0
    stalled: int = 0


def sweep(runtime: Runtime, *, limit: int = 500) -> SweepReport:
    """One recovery pass; returns what it did."""
    report = SweepReport()
    settings = runtime.settings
    with runtime.unit_of_work() as uow:
        if not health_queries.try_sweeper_lock(uow.conn):
            return report
        now = time.time()
        cutoff = now - settings.worker_timeout
        live = health_queries.live_workers(uow.conn, cutoff)
        for step in health_queries.orphaned_steps(uow.conn, live, cutoff, limit):
            if transitions.attempt_lost(uow, step, settings.max_lost_attempts):
                uow.send_advance(step.run_id)  # the replay parks the run on the failed step
                report.parked += 1
                outcome = "run parked as failed"
            else:
                transitions.next_attempt(uow, step)
                report.redispatched += 1
                outcome = f"dispatched again as attempt {step.attempt + 1}"
            logger.warning("Step %r of run %s was held by dead worker %s: %s.", step.step_key, step.run_id,
                           step.worker, outcome)
        for run_id in health_queries.expired_leases(uow.conn, now, limit):
            queries.break_lease(uow.conn, run_id)
            uow.send_advance(run_id)
            report.leases_broken += 1
        for run_id in health_queries.stalled_runs(uow.conn, cutoff, limit):
            uow.send_advance(run_id)
            report.stalled += 1
        health_queries.forget_workers(uow.conn, now - 100 * settings.worker_timeout)
        event_transitions.forget_expired_events(uow, now, limit)
    if report.leases_broken:
        logger.warning("Sweeper broke %d expired run lease(s): their coordinator died; advanced again.",
                       report.leases_broken)
    if report.stalled:
        logger.warning("Sweeper advanced %d stalled run(s).", report.stalled)
    return report
