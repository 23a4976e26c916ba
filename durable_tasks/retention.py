"""Retention: the worker services delete expired journal rows in small batches, like Celery's result_expires.

Each pass deletes at most ``retention_batch`` rows of each kind, each kind in its own short transaction:
finished runs (with their journals) older than ``retain_finished_runs``, timers fired longer ago than
``retain_fired_timers``, and attempt rows of steps that are no longer pending, older than
``retain_attempts``. A setting of 0 keeps that kind forever; ``retention=False`` turns it all off.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .operations import prune_batch
from .runtime import Runtime
from .store import retention_queries
from .vocabulary import FINISHED_RUN_STATUSES

logger = logging.getLogger("durable_tasks.retention")


@dataclass
class RetentionReport:
    """Rows deleted by one pass."""

    runs: int = 0
    timers: int = 0
    attempts: int = 0


def prune_expired(runtime: Runtime) -> RetentionReport:
    """One retention pass; returns what it deleted."""
    settings = runtime.settings
    report = RetentionReport()
    if not settings.retention:
        return report
    now = time.time()
    batch = settings.retention_batch
    if settings.retain_finished_runs:
        report.runs = prune_batch(runtime.store, now - settings.retain_finished_runs, FINISHED_RUN_STATUSES, batch)
    if settings.retain_fired_timers:
        with runtime.store.begin() as conn:
            report.timers = retention_queries.delete_fired_timers(conn, now - settings.retain_fired_timers, batch)
    if settings.retain_attempts:
        with runtime.store.begin() as conn:
            report.attempts = retention_queries.delete_old_attempts(conn, now - settings.retain_attempts, batch)
    if report.runs or report.timers or report.attempts:
        logger.info("Retention deleted %d finished run(s), %d fired timer(s) and %d old attempt(s).",
                    report.runs, report.timers, report.attempts)
    return report
