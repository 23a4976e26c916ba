"""Every statement the library runs against the journal, each a small function on a ``Connection``.

Keeping SQL here, away from the coordinator's logic, makes the commit count per step easy to audit
(the benchmark counts them): a task step costs one commit to claim it and one to record its result and
advance the run.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import replace
from itertools import takewhile
from typing import Any, cast

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)

from ..records import AttemptRow, LockedRun, RunRow, StepRow, TimerRow, WrittenStep
from ..vocabulary import (
    ACTIVE_RUN_STATUSES,
    AttemptStatus,
    OutboxKind,
    StepKind,
    StepStatus,
)
from .hot import DriverStatement
from .schema import attempts, outbox, runs, steps, timers

# Hot-path statements, built once: building and hashing a statement costs more than running it here.
_LOCK_RUN = (
    select(runs.c.id, runs.c.workflow, runs.c.status, runs.c.input, runs.c.lease_owner, runs.c.lease_until,
           runs.c.wake_seq, runs.c.created_at, runs.c.schedule, runs.c.scheduled_for, runs.c.parent_id,
           runs.c.parent_position)
    .where(runs.c.id == bindparam("run_id"))
    .with_for_update()
)
_LOAD_JOURNAL = select(steps).where(steps.c.run_id == bindparam("run_id"))
# The columns of a step row in the order of WrittenStep's fields, so a fetched tuple becomes one directly.
_STEP_COLUMNS = [steps.c[name] for name in WrittenStep.__dataclass_fields__]
_RUN_COLUMNS = list(_LOCK_RUN.selected_columns)
_LOAD_STEPS_FROM = select(*_STEP_COLUMNS).where(steps.c.run_id == bindparam("run_id"),
                                                steps.c.position >= bindparam("from_position"))
# Literal statuses: an expanding IN parameter would be rendered again at every execution.
_ACTIVE_RUN = or_(*(runs.c.status == literal_column(f"'{status}'") for status in ACTIVE_RUN_STATUSES))
# The coordinator's first statement: lock the run row and read the journal rows that may have changed since
# this process last saw them (all of them for a run it has not cached), in one round trip. Finished runs
# bring no steps: their advance is a no-op.
_LOCK_RUN_WITH_STEPS = (
    select(*_RUN_COLUMNS, *(column.label(f"step_{column.name}") for column in _STEP_COLUMNS))
    .select_from(runs.outerjoin(steps, and_(steps.c.run_id == runs.c.id,
                                            steps.c.position >= bindparam("from_position"),
                                            _ACTIVE_RUN)))
    .where(runs.c.id == bindparam("run_id"))
    .with_for_update(of=runs)
)
_CLAIM_STEP = (
    update(steps)
    .where(steps.c.run_id == bindparam("b_run"), steps.c.position == bindparam("pos"),
           steps.c.attempt == bindparam("att"), steps.c.status == StepStatus.DISPATCHED)
    .values(status=StepStatus.RUNNING, worker=bindparam("b_worker"), started_at=bindparam("now"))
)
_FINISHABLE = or_(*(steps.c.status == literal_column(f"'{status}'")
                     for status in (StepStatus.DISPATCHED, StepStatus.RUNNING, StepStatus.CANCELLED)))
_FINISH_STEP = (
    update(steps)
    .where(steps.c.run_id == bindparam("b_run"), steps.c.position == bindparam("pos"), _FINISHABLE)
    .values(status=bindparam("new_status"), result=bindparam("new_result"), error=None,
            finished_at=bindparam("now"))
)
# PostgreSQL: lock the run, journal a task step's result and read the journal rows that may have changed, in
# one round trip. The UPDATE waits for the run's lock (its EXISTS on the locked row is evaluated first), so
# the lock order is the coordinator's; the SELECT sees the steps as they were before the UPDATE, and the
# caller puts the finished step's new values in.
_LOCKED = (select(*_RUN_COLUMNS).where(runs.c.id == bindparam("b_run")).with_for_update().cte("locked"))
_DONE = (
    update(steps)
    .where(steps.c.run_id == bindparam("b_run"), steps.c.position == bindparam("pos"), _FINISHABLE,
           exists(select(_LOCKED.c.id)))
    .values(status=bindparam("new_status"), result=bindparam("new_result"), error=None,
            finished_at=bindparam("now"))
    .returning(steps.c.position)
    .cte("done")
)
_FINISH_AND_LOCK = (
    select(*_LOCKED.c, select(func.count()).select_from(_DONE).scalar_subquery().label("finished"),
           *(column.label(f"step_{column.name}") for column in _STEP_COLUMNS))
    .select_from(_LOCKED.outerjoin(steps, and_(
        steps.c.run_id == _LOCKED.c.id, steps.c.position >= bindparam("from_position"),
        or_(*(_LOCKED.c.status == literal_column(f"'{status}'") for status in ACTIVE_RUN_STATUSES)))))
)

_HOT_LOCK_RUN_WITH_STEPS = DriverStatement(_LOCK_RUN_WITH_STEPS)
_HOT_LOAD_STEPS_FROM = DriverStatement(_LOAD_STEPS_FROM)
_HOT_CLAIM_STEP = DriverStatement(_CLAIM_STEP)
_HOT_FINISH_STEP = DriverStatement(_FINISH_STEP)
_HOT_FINISH_AND_LOCK = DriverStatement(_FINISH_AND_LOCK)
_HOT_INSERT_STEP: dict[tuple[str, ...], DriverStatement] = {}

LockedRunRow = namedtuple("LockedRunRow", [column.name for column in _RUN_COLUMNS])  # type: ignore[misc]
"""A :class:`~durable_tasks.records.LockedRun` as the hot path reads it."""


# --- runs -------------------------------------------------------------------------------------------


def insert_run(conn: Connection, **values: Any) -> None:
    conn.execute(insert(runs).values(**values))


def run_for_key(conn: Connection, idempotency_key: str) -> RunRow | None:
    """The run started with ``idempotency_key``, if any."""
    return cast("RunRow | None", conn.execute(select(runs).where(runs.c.idempotency_key == idempotency_key)).first())


def get_run(conn: Connection, run_id: str, *, lock: bool = False) -> RunRow | None:
    """The run row; ``lock`` holds it until the transaction ends.

    Every writer that touches a run's rows locks the run row first (the coordinator does in
    :func:`lock_run`), so two writers never wait on each other in opposite orders.
    """
    query = select(runs).where(runs.c.id == run_id)
    return cast("RunRow | None", conn.execute(query.with_for_update() if lock else query).first())


def lock_run(conn: Connection, run_id: str) -> LockedRun | None:
    """The run row, locked until the transaction ends (PostgreSQL; SQLite's write lock covers it)."""
    return cast("LockedRun | None", conn.execute(_LOCK_RUN, {"run_id": run_id}).first())


def lock_run_with_steps(conn: Connection, run_id: str, from_position: int) -> tuple[LockedRun | None,
                                                                                  dict[int, StepRow]]:
    """:func:`lock_run`, plus the run's steps at ``from_position`` and after (none when the run is finished)."""
    rows = _HOT_LOCK_RUN_WITH_STEPS.execute(conn, {"run_id": run_id, "from_position": from_position}).fetchall()
    if not rows:
        return None, {}
    width = len(_RUN_COLUMNS)
    found: dict[int, StepRow] = {}
    for row in rows:
        if row[width + 1] is not None:  # the step's position: None when the outer join found no step
            found[row[width + 1]] = WrittenStep(*row[width:])
    return cast("LockedRun", LockedRunRow(*rows[0][:width])), found


def load_steps_from(conn: Connection, run_id: str, from_position: int) -> dict[int, StepRow]:
    """The run's steps at ``from_position`` and after, by position."""
    rows = _HOT_LOAD_STEPS_FROM.execute(conn, {"run_id": run_id, "from_position": from_position}).fetchall()
    return {row[1]: WrittenStep(*row) for row in rows}


def wake(conn: Connection, run_id: str) -> None:
    """Tell the lease holder that something changed (it replays once more before it lets go), and every process
    that keeps the run's journal that it must read it again in full (:mod:`durable_tasks.journal`)."""
    conn.execute(update(runs).where(runs.c.id == run_id).values(wake_seq=runs.c.wake_seq + 1))


def take_lease(conn: Connection, run_id: str, owner: str, lease_until: float) -> int:
    """Lease the (locked) run to ``owner``; returns the ``wake_seq`` its release must still find."""
    return conn.execute(
        update(runs).where(runs.c.id == run_id).values(lease_owner=owner, lease_until=lease_until)
        .returning(runs.c.wake_seq)
    ).scalar_one()


def break_lease(conn: Connection, run_id: str) -> None:
    """Drop the lease of a coordinator that died holding it."""
    conn.execute(update(runs).where(runs.c.id == run_id).values(lease_owner=None, lease_until=None))


def release_run(conn: Connection, run_id: str, owner: str, wake_seq: int, **values: Any) -> bool:
    """Give the lease back and write the run's new state, unless someone woke it meanwhile."""
    result = conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.lease_owner == owner, runs.c.wake_seq == wake_seq)
        .values(lease_owner=None, lease_until=None, **values)
    )
    return result.rowcount == 1


def update_run(conn: Connection, run_id: str, **values: Any) -> int:
    return conn.execute(update(runs).where(runs.c.id == run_id).values(**values)).rowcount


def renew_leases(conn: Connection, owner: str, run_ids: Sequence[str], lease_until: float) -> None:
    conn.execute(
        update(runs)
        .where(runs.c.id.in_(run_ids), runs.c.lease_owner == owner)
        .values(lease_until=lease_until)
    )


def children_of(conn: Connection, run_id: str, *, active_only: bool = False) -> list[RunRow]:
    """The child runs of ``run_id`` (every attempt of each child step), oldest first."""
    query = select(runs).where(runs.c.parent_id == run_id).order_by(runs.c.created_at)
    if active_only:
        query = query.where(runs.c.status.in_(ACTIVE_RUN_STATUSES))
    return cast("list[RunRow]", list(conn.execute(query)))


def list_runs(
    conn: Connection, *, status: str | Sequence[str] | None = None, workflow: str | None = None,
    created_after: float | None = None, error_type: str | None = None, limit: int = 50
) -> list[RunRow]:
    """The newest runs matching every filter given. ``workflow`` matches the registry name or the label;
    ``error_type`` the error's qualified type name or its last part (``KeyError``)."""
    query = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(runs.c.status.in_([status] if isinstance(status, str) else list(status)))
    if workflow:
        query = query.where(or_(runs.c.workflow == workflow, runs.c.label == workflow))
    if created_after is not None:
        query = query.where(runs.c.created_at >= created_after)
    if error_type:
        # The error is JSON written with or without spaces after the colon: match both spellings.
        escaped = error_type.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        patterns = [f'%"type":{space}"{prefix}{escaped}"%' for space in ("", " ") for prefix in ("", "%.")]
        query = query.where(or_(*(runs.c.error.like(pattern, escape="\\") for pattern in patterns)))
    return cast("list[RunRow]", list(conn.execute(query)))


# --- steps (the journal) ----------------------------------------------------------------------------


def load_journal(conn: Connection, run_id: str) -> dict[int, StepRow]:
    """The steps of a run by position."""
    rows = cast("list[StepRow]", conn.execute(_LOAD_JOURNAL, {"run_id": run_id}).all())
    return {row.position: row for row in rows}


def insert_step(conn: Connection, **values: Any) -> None:
    columns = tuple(values)
    statement = _HOT_INSERT_STEP.get(columns)
    if statement is None:  # one compiled INSERT per set of columns given (a handful of call sites)
        statement = _HOT_INSERT_STEP[columns] = DriverStatement(
            insert(steps).values({column: bindparam(column) for column in columns}))
    statement.execute(conn, values)


def claim_step(conn: Connection, run_id: str, position: int, attempt: int, worker: str, now: float) -> bool:
    """Mark a dispatched step as taken by ``worker``; False when it is taken or done already."""
    params = {"b_run": run_id, "pos": position, "att": attempt, "b_worker": worker, "now": now}
    return bool(_HOT_CLAIM_STEP.execute(conn, params).rowcount == 1)


def finish_step(conn: Connection, run_id: str, position: int, *, status: str, result: str | None,
                finished_at: float) -> bool:
    """Journal a task step's result unless another delivery did already; False for a duplicate.

    Any attempt's result is accepted while the step is unfinished: a worker presumed dead that still
    finishes saves the re-dispatched attempt its work (the re-dispatched message then finds it done).
    """
    params = {"b_run": run_id, "pos": position, "new_status": status, "new_result": result, "now": finished_at}
    return bool(_HOT_FINISH_STEP.execute(conn, params).rowcount == 1)


def finish_step_locking_run(conn: Connection, run_id: str, position: int, *, status: str, result: str | None,
                            finished_at: float, from_position: int) -> tuple[bool, LockedRun | None,
                                                                            dict[int, StepRow]]:
    """:func:`lock_run_with_steps`, then :func:`finish_step`: (finished, the locked run, the steps read).

    The run is locked before the step is written, as every writer does; on PostgreSQL the three take one
    round trip. The steps read show the finished step as it is now.
    """
    if conn.dialect.name != "postgresql":
        run, found = lock_run_with_steps(conn, run_id, from_position)
        finished = finish_step(conn, run_id, position, status=status, result=result, finished_at=finished_at)
    else:
        params = {"b_run": run_id, "pos": position, "new_status": status, "new_result": result, "now": finished_at,
                  "from_position": from_position}
        rows = _HOT_FINISH_AND_LOCK.execute(conn, params).fetchall()
        if not rows:
            return False, None, {}
        width = len(_RUN_COLUMNS)
        finished = rows[0][width] == 1
        found = {row[width + 2]: WrittenStep(*row[width + 1:]) for row in rows if row[width + 2] is not None}
        run = cast("LockedRun", LockedRunRow(*rows[0][:width]))
    step = found.get(position)
    if finished and step is not None and step.status != status:
        found[position] = replace(cast(WrittenStep, step), status=status, result=result, error=None,
                                  finished_at=finished_at)
    return finished, run, found


def get_step(conn: Connection, run_id: str, position: int) -> StepRow | None:
    query = select(steps).where(steps.c.run_id == run_id, steps.c.position == position)
    return cast("StepRow | None", conn.execute(query).first())


def find_step(conn: Connection, run_id: str, step_key: str) -> StepRow | None:
    query = select(steps).where(steps.c.run_id == run_id, steps.c.step_key == step_key)
    return cast("StepRow | None", conn.execute(query).first())


def copy_steps(conn: Connection, from_run: str, to_run: str, before_position: int) -> None:
    """Copy the steps of ``from_run`` before ``before_position`` into ``to_run`` (a fork)."""
    columns = [column for column in steps.c if column.name != "run_id"]
    source = select(literal(to_run).label("run_id"), *columns).where(steps.c.run_id == from_run,
                                                                      steps.c.position < before_position)
    conn.execute(insert(steps).from_select(["run_id", *(column.name for column in columns)], source))


def delete_step(conn: Connection, run_id: str, position: int) -> None:
    conn.execute(delete(steps).where(steps.c.run_id == run_id, steps.c.position == position))


def update_step(conn: Connection, run_id: str, position: int, **values: Any) -> int:
    return conn.execute(
        update(steps).where(steps.c.run_id == run_id, steps.c.position == position).values(**values)
    ).rowcount


def cancel_pending_steps(conn: Connection, run_id: str, statuses: Sequence[str], status: str, now: float) -> None:
    conn.execute(
        update(steps)
        .where(steps.c.run_id == run_id, steps.c.status.in_(list(statuses)))
        .values(status=status, finished_at=now)
    )


def cancelled_steps(conn: Connection, addresses: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of the steps at ``(run_id, position)`` are journaled ``cancelled`` (primary-key lookups)."""
    if not addresses:
        return set()
    query = select(steps.c.run_id, steps.c.position).where(
        steps.c.status == StepStatus.CANCELLED,
        or_(*(and_(steps.c.run_id == run_id, steps.c.position == position) for run_id, position in addresses)))
    return {(run_id, position) for run_id, position in conn.execute(query)}


def insert_attempt(conn: Connection, **values: Any) -> None:
    conn.execute(insert(attempts).values(**values))


def list_attempts(conn: Connection, run_id: str) -> list[AttemptRow]:
    query = select(attempts).where(attempts.c.run_id == run_id).order_by(attempts.c.position, attempts.c.id)
    return cast("list[AttemptRow]", list(conn.execute(query)))


# --- outbox -----------------------------------------------------------------------------------------


def add_outbox(conn: Connection, run_id: str, kind: str, payload: dict[str, Any] | str, now: float,
               publish_after: float, queue: str | None = None) -> int:
    """Write one outbox row; returns its id. ``payload`` is a dict of JSON values, or text encoded already."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    outbox_id: int = conn.execute(
        insert(outbox)
        .values(run_id=run_id, kind=kind, payload=text,
                created_at=now, publish_after=publish_after, publish_count=0, queue=queue, published_at=now)
        .returning(outbox.c.id)
    ).scalar_one()
    return outbox_id


def delete_outboxes(conn: Connection, outbox_ids: Sequence[int]) -> None:
    """Delete outbox rows whose messages the broker or Kafka confirmed (nothing here consumes them)."""
    conn.execute(delete(outbox).where(outbox.c.id.in_(list(outbox_ids))))


def consume_outbox(conn: Connection, outbox_id: int) -> dict[str, Any]:
    """Delete an outbox row that is acted on; returns its payload (empty when it was consumed already)."""
    payload = conn.execute(delete(outbox).where(outbox.c.id == outbox_id).returning(outbox.c.payload)).scalar()
    return json.loads(payload) if payload and payload != "{}" else {}


def end_outbox(conn: Connection, outbox_ids: Sequence[int]) -> None:
    """Delete the rows of messages their broker confirmed (the user's own messages)."""
    conn.execute(delete(outbox).where(outbox.c.id.in_(list(outbox_ids))))


def any_due_dispatch(conn: Connection, now: float) -> bool:
    return conn.execute(
        select(steps.c.run_id).where(steps.c.status == StepStatus.DISPATCHED, steps.c.publish_after <= now).limit(1)
    ).first() is not None


def due_dispatches(conn: Connection, now: float, limit: int) -> list[StepRow]:
    """Dispatched task steps still unclaimed at their ``publish_after``, oldest message first (locked)."""
    query = (
        select(steps)
        .where(steps.c.status == StepStatus.DISPATCHED, steps.c.kind == StepKind.TASK,
               steps.c.publish_after <= now)
        .order_by(steps.c.published_at.asc().nulls_first())
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return cast("list[StepRow]", list(conn.execute(query)))


def any_due_outbox(conn: Connection, now: float) -> bool:
    return conn.execute(select(outbox.c.id).where(outbox.c.publish_after <= now).limit(1)).first() is not None


def due_outbox(conn: Connection, now: float, limit: int) -> list[Any]:
    """Outbox rows (``id``, ``run_id``, ``kind``, ``queue``, ``published_at``, ...) still unconsumed at their
    ``publish_after``, oldest message first (locked)."""
    query = (select(outbox).where(outbox.c.publish_after <= now)
             .order_by(outbox.c.published_at.asc().nulls_first()).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(conn.execute(query))


def resent(conn: Connection, kind: OutboxKind, row: Any, now: float, redelivery_after: float) -> None:
    """Record that the relay publishes ``row``'s message again: at the back of its queue, next check later
    (exponential backoff)."""
    values = {"publish_after": now + redelivery_after * (2 ** min(row.publish_count, 5)), "published_at": now}
    if kind == OutboxKind.DISPATCH:
        conn.execute(update(steps).where(steps.c.run_id == row.run_id, steps.c.position == row.position)
                     .values(publish_count=steps.c.publish_count + 1, **values))
    else:
        conn.execute(update(outbox).where(outbox.c.id == row.id)
                     .values(publish_count=outbox.c.publish_count + 1, **values))


def check_again(conn: Connection, kind: OutboxKind, row: Any, at: float) -> None:
    """A message still waiting in its queue: look at it again at ``at``."""
    if kind == OutboxKind.DISPATCH:
        conn.execute(update(steps).where(steps.c.run_id == row.run_id, steps.c.position == row.position)
                     .values(publish_after=at))
    else:
        conn.execute(update(outbox).where(outbox.c.id == row.id).values(publish_after=at))


def queue_passed(conn: Connection, queue: str, published_at: float, claimed_before: float, window: int = 100) -> bool:
    """True when the queue delivered a later message: one of the next ``window`` step messages published to
    ``queue`` after ``published_at`` was claimed before ``claimed_before``.

    Queues are FIFO, so a message the queue has passed (and nobody claimed) was lost; one that only waits
    behind a backlog has unclaimed messages after it, and the scan stops after ``window`` index entries.
    """
    later = (select(steps.c.started_at)
             .where(steps.c.queue == queue, steps.c.published_at > published_at)
             .order_by(steps.c.published_at).limit(window).subquery())
    query = select(later.c.started_at).where(later.c.started_at.is_not(None),
                                             later.c.started_at < claimed_before).limit(1)
    return conn.execute(query).first() is not None


def delete_outbox_of(conn: Connection, run_id: str) -> None:
    """Drop a run's queued advances; the user's own messages were committed with their steps and still leave."""
    conn.execute(delete(outbox).where(outbox.c.run_id == run_id, outbox.c.kind == OutboxKind.ADVANCE))


def pending_outbox(conn: Connection, run_id: str | None = None) -> list[Any]:
    query = select(outbox).order_by(outbox.c.id)
    if run_id is not None:
        query = query.where(outbox.c.run_id == run_id)
    return list(conn.execute(query))


# --- timers -----------------------------------------------------------------------------------------


def insert_timer(conn: Connection, run_id: str, position: int, purpose: str, due_at: float) -> int:
    """Write a pending timer; returns its id."""
    timer_id: int = conn.execute(
        insert(timers).values(run_id=run_id, position=position, purpose=purpose, due_at=due_at)
        .returning(timers.c.id)
    ).scalar_one()
    return timer_id


def get_timer(conn: Connection, timer_id: int) -> TimerRow | None:
    return cast("TimerRow | None", conn.execute(select(timers).where(timers.c.id == timer_id)).first())


def timers_to_hand_off(conn: Connection, due_by: float, limit: int) -> list[TimerRow]:
    """Pending timers due by ``due_by`` that no transport has taken yet, soonest first (locked on PostgreSQL:
    two hand-off polls never take the same timer). Only those rows are read (a partial index)."""
    query = (select(timers).where(timers.c.fired_at.is_(None), timers.c.handed_off_at.is_(None),
                                  timers.c.due_at <= due_by)
             .order_by(timers.c.due_at).limit(limit))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return cast("list[TimerRow]", list(conn.execute(query)))


def mark_handed_off(conn: Connection, timer_ids: Sequence[int], now: float) -> None:
    conn.execute(update(timers).where(timers.c.id.in_(list(timer_ids))).values(handed_off_at=now))


def pending_timers(conn: Connection, run_id: str) -> dict[int, float]:
    """The due times of a run's unfired timers, by step position."""
    query = select(timers.c.position, timers.c.due_at).where(timers.c.run_id == run_id, timers.c.fired_at.is_(None))
    return {position: due_at for position, due_at in conn.execute(query)}


def due_timers(conn: Connection, now: float, limit: int) -> list[TimerRow]:
    """Unfired timers due by ``now``, soonest first; only due rows are read (index on ``fired_at, due_at``).

    On PostgreSQL each timer is locked together with its run (``SKIP LOCKED``): a timer whose run is
    being advanced, cancelled or sent an event waits for the next poll, so firing never waits on a run
    lock while holding a timer (no lock-order deadlock with writers that lock the run first).
    """
    if conn.dialect.name != "postgresql":
        query = (
            select(timers)
            .where(timers.c.fired_at.is_(None), timers.c.due_at <= now)
            .order_by(timers.c.due_at)
            .limit(limit)
        )
        return cast("list[TimerRow]", list(conn.execute(query)))
    locked = (
        select(*timers.c)
        .join(runs, runs.c.id == timers.c.run_id)
        .where(timers.c.fired_at.is_(None), timers.c.due_at <= now)
        .order_by(timers.c.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=[timers, runs])
    )
    return cast("list[TimerRow]", list(conn.execute(locked)))


def any_due_timer(conn: Connection, now: float) -> bool:
    """Is a timer due? The order makes PostgreSQL walk the pending index instead of scanning the table from
    its start, which with a backlog it may guess cheaper and then read every far-future row first."""
    return conn.execute(
        select(timers.c.id).where(timers.c.fired_at.is_(None), timers.c.due_at <= now)
        .order_by(timers.c.due_at).limit(1)
    ).first() is not None


def fire_timer(conn: Connection, timer_id: int, now: float) -> bool:
    return conn.execute(
        update(timers).where(timers.c.id == timer_id, timers.c.fired_at.is_(None)).values(fired_at=now)
    ).rowcount == 1


def cancel_timers(conn: Connection, run_id: str, position: int | None, now: float) -> None:
    condition = [timers.c.run_id == run_id, timers.c.fired_at.is_(None)]
    if position is not None:
        condition.append(timers.c.position == position)
    conn.execute(update(timers).where(*condition).values(fired_at=now))


def attempts_since_resume(conn: Connection, run_id: str, position: int) -> int:
    """Attempts of a step counted against its retry budget: those after the operator's last resume."""
    statuses = recent_attempt_statuses(conn, run_id, position, 10_000)
    since_resume = takewhile(lambda status: status != AttemptStatus.RESUMED, statuses)
    return sum(1 for status in since_resume if status != AttemptStatus.LOST)


def recent_attempt_statuses(conn: Connection, run_id: str, position: int, limit: int) -> list[str]:
    """The statuses of a step's latest attempt rows, newest first."""
    return list(
        conn.execute(
            select(attempts.c.status)
            .where(attempts.c.run_id == run_id, attempts.c.position == position)
            .order_by(attempts.c.id.desc())
            .limit(limit)
        ).scalars()
    )
