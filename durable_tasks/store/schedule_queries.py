"""The statements on ``durable_schedules``, and the reads of the runs a schedule started.

The firing pass reads first (:func:`any_due_schedule`, no lock) and only then takes one due schedule's row
with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite's write transaction serialises firers), so any number of
workers share the work and never fire one schedule at the same time.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

from sqlalchemy import Connection, insert, or_, select, update

from ..records import ScheduleRow
from ..vocabulary import ACTIVE_RUN_STATUSES
from .schema import runs, schedules


def any_due_schedule(conn: Connection, now: float) -> bool:
    """True when some schedule's next fire time has come (a cheap read before any lock is taken)."""
    query = select(schedules.c.name).where(schedules.c.next_fire_at <= now).limit(1)
    return conn.execute(query).first() is not None


def next_due_schedule(conn: Connection, now: float, skip: Collection[str] = ()) -> ScheduleRow | None:
    """The most overdue schedule, locked until the transaction ends; one another firer holds is skipped."""
    query = select(schedules).where(schedules.c.next_fire_at <= now).order_by(schedules.c.next_fire_at).limit(1)
    if skip:
        query = query.where(schedules.c.name.not_in(list(skip)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return cast("ScheduleRow | None", conn.execute(query).first())


def get_schedule(conn: Connection, name: str, *, lock: bool = False) -> ScheduleRow | None:
    """One schedule by name; ``lock`` holds its row until the transaction ends (taken before any run row)."""
    query = select(schedules).where(schedules.c.name == name)
    return cast("ScheduleRow | None", conn.execute(query.with_for_update() if lock else query).first())


def schedules_to_sync(conn: Connection, app: str, names: Collection[str]) -> list[ScheduleRow]:
    """The rows a sync of ``app`` may touch (its own, and any row named like a declaration), locked in name order."""
    query = select(schedules).where(or_(schedules.c.app == app, schedules.c.name.in_(list(names))))
    return cast("list[ScheduleRow]", list(conn.execute(query.order_by(schedules.c.name).with_for_update())))


def insert_schedule(conn: Connection, **values: Any) -> None:
    conn.execute(insert(schedules).values(**values))


def update_schedule(conn: Connection, name: str, **values: Any) -> int:
    return conn.execute(update(schedules).where(schedules.c.name == name).values(**values)).rowcount


def list_schedules(conn: Connection, *, app: str | None = None, removed: bool = False) -> list[Any]:
    """Schedules by name, each with its last run's ``last_run_status`` (a join on the run's id, no scan)."""
    query = (
        select(schedules, runs.c.status.label("last_run_status"))
        .select_from(schedules.outerjoin(runs, runs.c.id == schedules.c.last_run_id))
        .order_by(schedules.c.name)
    )
    if app is not None:
        query = query.where(schedules.c.app == app)
    if not removed:
        query = query.where(schedules.c.removed_at.is_(None))
    return list(conn.execute(query))


def active_runs(conn: Connection, schedule: str, limit: int) -> list[str]:
    """Ids of the schedule's runs that are still going (the index on ``schedule, status`` serves it)."""
    query = (
        select(runs.c.id)
        .where(runs.c.schedule == schedule, runs.c.status.in_(ACTIVE_RUN_STATUSES))
        .order_by(runs.c.created_at)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def taken_keys(conn: Connection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` already name a run (the unique index on ``idempotency_key`` serves it)."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = list(keys[start:start + 500])
        found.update(conn.execute(select(runs.c.idempotency_key).where(runs.c.idempotency_key.in_(chunk))).scalars())
    return found
