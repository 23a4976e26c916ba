"""Writing the schedules declared in code to the database: added, changed, removed (stopped, history kept).

A worker syncs its Celery app's schedules when it starts. Several releases of the code can run side by side
during a rolling deploy, and several kinds of workers of one app can import different modules, so a sync
follows three rules:

1. **Newer code wins.** Each row records ``declared_at``: when the process whose code last declared (or
   removed) it started. A process changes or removes a schedule only when that process started no later than
   itself, so a worker of an older release never undoes what a newer one declared, however late its sync runs.
2. **A worker speaks only for modules it knows.** It removes a schedule its code no longer declares only if
   the module that declared it is imported in this process, or no longer exists; schedules of modules it
   never imported belong to other workers of the same app.
3. **Only code schedules are synced**, scoped by ``app.main``. Schedules written by
   ``durable cron import --apply`` stay until code declares the same name.

A changed calendar (the definition hash) starts over like a new schedule: no tick due before the change
runs, except the current one. A removed schedule stops (``next_fire_at`` is NULL); its row, counts and runs
stay, and declaring it again revives it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError

from .cron import Declaration, ScheduleBook
from .records import ScheduleRow
from .store import schedule_queries
from .store.database import Store
from .vocabulary import ScheduleSource

logger = logging.getLogger("durable_tasks.schedules")

_DEFINITION = ("workflow", "input", "fingerprint", "module", "cron", "every", "tz", "overlap", "buffer_limit",
               "catch_up", "catch_up_window", "jitter", "start_at", "end_at", "paused_in_code", "definition_hash")


@dataclass
class SyncReport:
    """What a sync did, by schedule name."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    revived: list[str] = field(default_factory=list)
    newer: list[str] = field(default_factory=list)
    """Left alone: a process that started later declared (or removed) them."""
    conflicts: list[str] = field(default_factory=list)
    """Declared here, but the name belongs to a schedule of another Celery app."""


def definition(declared: Declaration) -> dict[str, Any]:
    """The columns of a schedule's row that its declaration decides."""
    spec = declared.spec
    return {
        "workflow": declared.workflow, "input": declared.input, "fingerprint": declared.fingerprint,
        "module": declared.module, "cron": spec.cron, "every": spec.every, "tz": spec.tz,
        "overlap": spec.overlap.value, "buffer_limit": spec.buffer_limit, "catch_up": spec.catch_up.value,
        "catch_up_window": spec.catch_up_window, "jitter": spec.jitter, "start_at": spec.start_at,
        "end_at": spec.end_at, "paused_in_code": spec.paused, "definition_hash": spec.definition_hash(),
    }


def fresh_cursor(now: float) -> dict[str, Any]:
    """Where a new, revived or recalculated schedule starts: its current tick at the next pass, no backfill."""
    return {"last_fired": None, "next_fire_at": now, "buffered": None}


def sync_schedules(store: Store, book: ScheduleBook, *, app: str, now: float | None = None) -> SyncReport:
    """Write the schedules of ``book`` (declared by the code of Celery app ``app``) to the database.

    ``book.started_at`` is this process's start for rule 1 above. Safe to run again, and from several workers
    at once (rows are locked in name order; a name two workers add together is retried once).
    """
    for attempt in (1, 2):
        try:
            with store.begin() as conn:
                report = _sync(conn, book, app, time.time() if now is None else now)
        except IntegrityError:
            if attempt == 2:
                raise
            continue
        _log(report, app)
        return report
    raise AssertionError("unreachable")


def _sync(conn: Any, book: ScheduleBook, app: str, now: float) -> SyncReport:
    report = SyncReport()
    started = book.started_at
    declared = {item.name: item for item in book}
    rows = {row.name: row for row in schedule_queries.schedules_to_sync(conn, app, list(declared))}
    for name, item in declared.items():
        row = rows.get(name)
        values = definition(item)
        if row is None:
            schedule_queries.insert_schedule(
                conn, name=name, app=app, source=ScheduleSource.CODE, declared_at=started, created_at=now,
                updated_at=now, paused=item.spec.paused, missed=0, skipped=0, **values, **fresh_cursor(now))
            report.added.append(name)
        elif row.removed_at is None and row.app != app:
            report.conflicts.append(name)
        elif row.declared_at > started and row.source == ScheduleSource.CODE:
            report.newer.append(name)
        elif row.removed_at is not None:
            schedule_queries.update_schedule(
                conn, name, app=app, source=ScheduleSource.CODE, declared_at=started, removed_at=None,
                updated_at=now, paused=item.spec.paused, **values, **fresh_cursor(now))
            report.revived.append(name)
        else:
            _update(conn, row, values, started, now, report)
    for row in rows.values():
        if (row.app == app and row.source == ScheduleSource.CODE and row.removed_at is None
                and row.name not in declared):
            if row.declared_at > started:
                report.newer.append(row.name)
            elif _speaks_for(row.module, book):
                schedule_queries.update_schedule(conn, row.name, removed_at=now, next_fire_at=None, buffered=None,
                                                 declared_at=started, updated_at=now)
                report.removed.append(row.name)
    return report


def _update(conn: Any, row: ScheduleRow, values: dict[str, Any], started: float, now: float,
            report: SyncReport) -> None:
    changes = {key: value for key, value in values.items() if getattr(row, key) != value}
    if row.source != ScheduleSource.CODE:
        changes["source"] = ScheduleSource.CODE  # code takes over an imported schedule of the same name
    if "definition_hash" in changes:
        changes.update(fresh_cursor(now))
    if "paused_in_code" in changes:
        changes["paused"] = values["paused_in_code"]  # a pause by an operator stays until the code changes it
    if changes:
        report.changed.append(row.name)
    if changes or row.declared_at < started:
        schedule_queries.update_schedule(conn, row.name, declared_at=started, updated_at=now, **changes)


def _speaks_for(module: str | None, book: ScheduleBook) -> bool:
    """Whether this process knows what ``module`` declares now: it imported it, or the module is gone."""
    if module is None:
        return True
    if module == "__main__":  # every process has one; only a process whose own script declares schedules
        return any(item.module == "__main__" for item in book)
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True  # its package is gone too
    except Exception:  # an import error in a parent package: it may still exist; leave it to others
        return False


def _log(report: SyncReport, app: str) -> None:
    for verb, names in (("added", report.added), ("changed", report.changed), ("removed", report.removed),
                        ("revived", report.revived)):
        if names:
            logger.info("Schedules of %s %s: %s.", app, verb, ", ".join(names))
    if report.newer:
        logger.warning("Schedules %s were declared or removed by a process that started after this one (a newer "
                       "release?): left as they are.", ", ".join(report.newer))
    for name in report.conflicts:
        logger.error("Schedule %r is declared by this app (%s) but already belongs to another Celery app; it keeps "
                     "firing for that app. Rename one of them, or remove it from the other app's code.", name, app)
