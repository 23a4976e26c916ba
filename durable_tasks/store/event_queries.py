"""Statements on outside events: the waits that expect them (``durable_waits``) and the events kept until a
wait takes them (``durable_signals``)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, delete, insert, or_, select, update

from ..records import SignalRow, WaitRow
from ..vocabulary import ACTIVE_RUN_STATUSES
from .schema import runs, signals, waits

_KEY_LOCK_SPACE = 0x64746576  # the first key of PostgreSQL's two-key advisory locks on correlation keys


def lock_correlation_key(conn: Connection, key: str) -> None:
    """Serialise, until the transaction ends, the writers that match events and waits on ``key``.

    A wait on a key and an event sent to that key touch no common row before one of them exists, so
    without this lock each could miss the other. SQLite's write lock already serialises them.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(space)s, hashtext(%(key)s))",
                             {"space": _KEY_LOCK_SPACE, "key": key})


def insert_wait(conn: Connection, **values: Any) -> None:
    conn.execute(insert(waits).values(**values))


def delete_waits(conn: Connection, run_id: str, position: int | None = None) -> int:
    condition = [waits.c.run_id == run_id]
    if position is not None:
        condition.append(waits.c.position == position)
    return conn.execute(delete(waits).where(*condition)).rowcount


def get_wait(conn: Connection, run_id: str, position: int) -> WaitRow | None:
    query = select(waits).where(waits.c.run_id == run_id, waits.c.position == position)
    return cast("WaitRow | None", conn.execute(query).first())


def wait_of_run(conn: Connection, run_id: str, name: str) -> WaitRow | None:
    """The run's first wait for event ``name``, whatever its correlation key."""
    query = (
        select(waits).where(waits.c.run_id == run_id, waits.c.name == name).order_by(waits.c.position).limit(1)
    )
    return cast("WaitRow | None", conn.execute(query).first())


def wait_on_key(conn: Connection, key: str, name: str) -> WaitRow | None:
    """The oldest wait of an active run for event ``name`` on correlation key ``key``."""
    active = select(runs.c.id).where(runs.c.id == waits.c.run_id, runs.c.status.in_(ACTIVE_RUN_STATUSES)).exists()
    query = (
        select(waits)
        .where(waits.c.correlation_key == key, waits.c.name == name, active)
        .order_by(waits.c.created_at, waits.c.run_id)
        .limit(1)
    )
    return cast("WaitRow | None", conn.execute(query).first())


def signal_by_event_id(conn: Connection, event_id: str) -> SignalRow | None:
    return cast("SignalRow | None", conn.execute(select(signals).where(signals.c.event_id == event_id)).first())


def insert_signal(conn: Connection, **values: Any) -> None:
    conn.execute(insert(signals).values(**values))


def kept_signal(conn: Connection, run_id: str, key: str | None, name: str, now: float) -> SignalRow | None:
    """The oldest unexpired, unconsumed event ``name`` sent to the run or to ``key``; locked on PostgreSQL."""
    address = signals.c.run_id == run_id
    if key is not None:
        address = or_(address, signals.c.correlation_key == key)
    query = (
        select(signals)
        .where(signals.c.name == name, signals.c.consumed_at.is_(None), signals.c.expires_at > now, address)
        .order_by(signals.c.id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return cast("SignalRow | None", conn.execute(query).first())


def consume_signal(conn: Connection, signal_id: int, run_id: str, position: int, now: float) -> bool:
    """Hand a kept event to the wait at ``position`` of ``run_id``; False if another wait took it first."""
    return conn.execute(
        update(signals)
        .where(signals.c.id == signal_id, signals.c.consumed_at.is_(None))
        .values(consumed_at=now, run_id=run_id, consumed_position=position)
    ).rowcount == 1


def delete_expired_signals(conn: Connection, now: float, limit: int) -> int:
    """Delete up to ``limit`` events that expired before any wait consumed them."""
    expired = (
        select(signals.c.id)
        .where(signals.c.expires_at < now, signals.c.consumed_at.is_(None))
        .limit(limit)
        .scalar_subquery()
    )
    return conn.execute(delete(signals).where(signals.c.id.in_(expired))).rowcount


def list_signals(conn: Connection, *, run_id: str | None = None, key: str | None = None) -> list[SignalRow]:
    """Events sent to (or consumed by) a run, or sent to a correlation key, oldest first."""
    query = select(signals).order_by(signals.c.id)
    if run_id is not None:
        query = query.where(signals.c.run_id == run_id)
    if key is not None:
        query = query.where(signals.c.correlation_key == key)
    return cast("list[SignalRow]", list(conn.execute(query)))


