"""Statements on the health of the system: worker heartbeats, what the sweeper recovers, and the backlogs
the metrics endpoint reads on each scrape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from ..records import StepRow, WorkerRow
from ..vocabulary import (
    ACTIVE_RUN_STATUSES,
    OWN_MESSAGE_KINDS,
    PENDING_STEP_STATUSES,
    OutboxKind,
    RunStatus,
    StepKind,
    StepStatus,
)
from .schema import outbox, runs, steps, timers, workers


def heartbeat(conn: Connection, worker_id: str, hostname: str, pid: int, now: float, *, role: str,
              interval: float, timeout: float) -> None:
    updated = conn.execute(
        update(workers).where(workers.c.id == worker_id).values(heartbeat_at=now, role=role)
    ).rowcount
    if not updated:
        conn.execute(
            insert(workers).values(id=worker_id, hostname=hostname, pid=pid, started_at=now, heartbeat_at=now,
                                   role=role, heartbeat_interval=interval, timeout=timeout)
        )


def mark_stopped(conn: Connection, worker_id: str, now: float) -> None:
    """A clean shutdown: the process is gone, and what it held can be recovered at once."""
    conn.execute(update(workers).where(workers.c.id == worker_id).values(stopped_at=now))


def live_workers(conn: Connection, since: float) -> list[str]:
    query = select(workers.c.id).where(workers.c.heartbeat_at >= since, workers.c.stopped_at.is_(None))
    return list(conn.execute(query).scalars())


def list_workers(conn: Connection) -> list[WorkerRow]:
    return cast("list[WorkerRow]", list(conn.execute(select(workers).order_by(workers.c.heartbeat_at.desc()))))


def forget_workers(conn: Connection, before: float) -> int:
    """Delete heartbeat rows older than ``before`` (their steps were recovered long ago)."""
    return conn.execute(delete(workers).where(workers.c.heartbeat_at < before)).rowcount


def try_sweeper_lock(conn: Connection) -> bool:
    """At most one sweeper at a time: a transaction-scoped advisory lock on PostgreSQL.

    On SQLite the transaction's write lock already serialises sweepers.
    """
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(7283645901)").scalar())


def orphaned_steps(conn: Connection, live: Sequence[str], started_before: float, limit: int) -> list[StepRow]:
    """Steps taken by a worker that is no longer alive, in runs that are still active."""
    active_run = select(runs.c.id).where(runs.c.id == steps.c.run_id, runs.c.status.in_(ACTIVE_RUN_STATUSES))
    query = (
        select(steps)
        .where(steps.c.status == StepStatus.RUNNING, steps.c.kind == StepKind.TASK,
               steps.c.started_at < started_before,
               active_run.exists())
        .limit(limit)
    )
    if live:
        query = query.where(or_(steps.c.worker.is_(None), steps.c.worker.not_in(list(live))))
    return cast("list[StepRow]", list(conn.execute(query)))


def expired_leases(conn: Connection, now: float, limit: int) -> list[str]:
    """Active runs whose coordinator stopped renewing its lease (its process died mid-advance)."""
    return list(
        conn.execute(
            select(runs.c.id)
            .where(runs.c.status.in_(ACTIVE_RUN_STATUSES), runs.c.lease_owner.is_not(None), runs.c.lease_until < now)
            .limit(limit)
        ).scalars()
    )


def stalled_runs(conn: Connection, before: float, limit: int) -> list[str]:
    """Active runs that nothing will move: no pending step, timer or outbox message, and no lease."""
    pending_step = (
        select(steps.c.run_id)
        .where(steps.c.run_id == runs.c.id,
               steps.c.status.in_(PENDING_STEP_STATUSES))
        .exists()
    )
    pending_timer = (
        select(timers.c.id).where(timers.c.run_id == runs.c.id, timers.c.fired_at.is_(None)).exists()
    )
    pending_message = (select(outbox.c.id)
                       .where(outbox.c.run_id == runs.c.id, outbox.c.kind == OutboxKind.ADVANCE).exists())
    query = (
        select(runs.c.id)
        .where(
            runs.c.status.in_((RunStatus.PENDING, RunStatus.RUNNING)),
            runs.c.updated_at < before,
            runs.c.lease_owner.is_(None),
            ~pending_step,
            ~pending_timer,
            ~pending_message,
        )
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


# --- monitoring (read on each metrics scrape) -------------------------------------------------------


def count_runs(conn: Connection) -> list[tuple[str, str, int]]:
    """``(workflow, status, runs)`` for every workflow and status in the journal."""
    query = select(runs.c.workflow, runs.c.status, func.count()).group_by(runs.c.workflow, runs.c.status)
    return [(workflow, status, count) for workflow, status, count in conn.execute(query)]


def outbox_backlog(conn: Connection) -> dict[str, tuple[int, float | None]]:
    """Unconsumed messages by kind (``advance`` rows, ``dispatch`` steps, unconfirmed ``task_message`` and
    ``topic_message`` rows): ``(count, oldest created_at)``."""
    backlog: dict[str, tuple[int, float | None]] = dict.fromkeys(
        (OutboxKind.ADVANCE, *OWN_MESSAGE_KINDS), (0, None))
    rows = conn.execute(select(outbox.c.kind, func.count(), func.min(outbox.c.created_at)).group_by(outbox.c.kind))
    for kind, count, oldest in rows:
        backlog[kind] = (count, oldest)
    dispatches = conn.execute(
        select(func.count(), func.min(steps.c.created_at))
        .where(steps.c.status == StepStatus.DISPATCHED, steps.c.kind == StepKind.TASK)
    ).one()
    backlog[OutboxKind.DISPATCH] = (dispatches[0], dispatches[1])
    return backlog


def timer_backlog(conn: Connection, now: float) -> tuple[int, int, float | None]:
    """Unfired timers: ``(pending, overdue, earliest due_at among the overdue)``."""
    pending = conn.execute(select(func.count()).where(timers.c.fired_at.is_(None))).scalar_one()
    overdue, earliest = conn.execute(
        select(func.count(), func.min(timers.c.due_at)).where(timers.c.fired_at.is_(None), timers.c.due_at <= now)
    ).one()
    return pending, overdue, earliest
