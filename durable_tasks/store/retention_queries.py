"""Statements of retention and pruning: deleting finished runs with their journals, fired timers and old attempts,
in bounded batches."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, select

from ..vocabulary import PENDING_STEP_STATUSES
from .schema import attempts, outbox, runs, signals, steps, timers, waits


def finished_runs_before(conn: Connection, cutoff: float, statuses: Sequence[str], limit: int) -> list[str]:
    return list(
        conn.execute(
            select(runs.c.id)
            .where(runs.c.status.in_(list(statuses)), runs.c.finished_at < cutoff)
            .order_by(runs.c.finished_at)
            .limit(limit)
        ).scalars()
    )


def delete_runs(conn: Connection, run_ids: Sequence[str]) -> None:
    """Delete runs with everything that belongs to them (no reliance on ON DELETE CASCADE)."""
    ids = list(run_ids)
    for table in (attempts, steps, timers, signals, waits, outbox):
        conn.execute(delete(table).where(table.c.run_id.in_(ids)))
    conn.execute(delete(runs).where(runs.c.id.in_(ids)))


def delete_fired_timers(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` timers that fired (or were cancelled) before ``before``; returns how many."""
    expired = select(timers.c.id).where(timers.c.fired_at < before).limit(limit)
    return conn.execute(delete(timers).where(timers.c.id.in_(expired.scalar_subquery()))).rowcount


def delete_old_attempts(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` attempt rows started before ``before`` whose step is no longer pending (a
    pending step's attempts still count against its retry budget)."""
    pending = (select(steps.c.run_id)
               .where(steps.c.run_id == attempts.c.run_id, steps.c.position == attempts.c.position,
                      steps.c.status.in_(PENDING_STEP_STATUSES)).exists())
    expired = select(attempts.c.id).where(attempts.c.started_at < before, ~pending).limit(limit)
    return conn.execute(delete(attempts).where(attempts.c.id.in_(expired.scalar_subquery()))).rowcount
