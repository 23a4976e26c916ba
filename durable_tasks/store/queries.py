"""Every statement the library runs against the journal, each a small function on a ``Connection``.

Keeping SQL here, away from the coordinator's logic, makes the commit count per step easy to audit
(the benchmark counts them): a task step costs one commit to claim it and one to record its result and
advance the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import takewhile
from typing import Any, cast

from sqlalchemy import Connection, bindparam, delete, insert, literal, or_, select, update

from ..records import AttemptRow, LockedRun, RunRow, StepRow, TimerRow, WorkerRow
from ..vocabulary import (
    ACTIVE_RUN_STATUSES,
    PENDING_STEP_STATUSES,
    AttemptStatus,
    RunStatus,
    StepKind,
    StepStatus,
)
from .schema import attempts, outbox, runs, signals, steps, timers, workers

# Hot-path statements, built once: building and hashing a statement costs more than running it here.
_LOCK_RUN = (
    select(runs.c.id, runs.c.workflow, runs.c.status, runs.c.input, runs.c.lease_owner, runs.c.lease_until,
           runs.c.wake_seq, runs.c.created_at, runs.c.schedule, runs.c.scheduled_for)
    .where(runs.c.id == bindparam("run_id"))
    .with_for_update()
)
_LOAD_JOURNAL = select(steps).where(steps.c.run_id == bindparam("run_id"))
_INSERT_STEP = insert(steps)
_CLAIM_STEP = (
    update(steps)
    .where(steps.c.run_id == bindparam("b_run"), steps.c.position == bindparam("pos"),
           steps.c.attempt == bindparam("att"), steps.c.status == StepStatus.DISPATCHED)
    .values(status=StepStatus.RUNNING, worker=bindparam("b_worker"), started_at=bindparam("now"))
)
_FINISH_STEP = (
    update(steps)
    .where(steps.c.run_id == bindparam("b_run"), steps.c.position == bindparam("pos"),
           steps.c.status.in_((StepStatus.DISPATCHED, StepStatus.RUNNING, StepStatus.CANCELLED)))
    .values(status=bindparam("new_status"), result=bindparam("new_result"), error=None,
            finished_at=bindparam("now"))
)


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


def wake(conn: Connection, run_id: str) -> None:
    """Tell the lease holder that something changed: it replays once more before it lets go."""
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
    for table in (attempts, steps, timers, signals, outbox):
        conn.execute(delete(table).where(table.c.run_id.in_(ids)))
    conn.execute(delete(runs).where(runs.c.id.in_(ids)))


def list_runs(
    conn: Connection, *, status: str | None = None, workflow: str | None = None, limit: int = 50
) -> list[RunRow]:
    query = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(runs.c.status == status)
    if workflow:
        query = query.where(runs.c.workflow == workflow)
    return cast("list[RunRow]", list(conn.execute(query)))


# --- steps (the journal) ----------------------------------------------------------------------------


def load_journal(conn: Connection, run_id: str) -> dict[int, StepRow]:
    """The steps of a run by position."""
    rows = cast("list[StepRow]", conn.execute(_LOAD_JOURNAL, {"run_id": run_id}).all())
    return {row.position: row for row in rows}


def insert_step(conn: Connection, **values: Any) -> None:
    conn.execute(_INSERT_STEP, values)


def claim_step(conn: Connection, run_id: str, position: int, attempt: int, worker: str, now: float) -> bool:
    """Mark a dispatched step as taken by ``worker``; False when it is taken or done already."""
    params = {"b_run": run_id, "pos": position, "att": attempt, "b_worker": worker, "now": now}
    return conn.execute(_CLAIM_STEP, params).rowcount == 1


def finish_step(conn: Connection, run_id: str, position: int, *, status: str, result: str | None,
                finished_at: float) -> bool:
    """Journal a task step's result unless another delivery did already; False for a duplicate.

    Any attempt's result is accepted while the step is unfinished: a worker presumed dead that still
    finishes saves the re-dispatched attempt its work (the re-dispatched message then finds it done).
    """
    params = {"b_run": run_id, "pos": position, "new_status": status, "new_result": result, "now": finished_at}
    return conn.execute(_FINISH_STEP, params).rowcount == 1


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


def insert_attempt(conn: Connection, **values: Any) -> None:
    conn.execute(insert(attempts).values(**values))


def list_attempts(conn: Connection, run_id: str) -> list[AttemptRow]:
    query = select(attempts).where(attempts.c.run_id == run_id).order_by(attempts.c.position, attempts.c.id)
    return cast("list[AttemptRow]", list(conn.execute(query)))


# --- outbox -----------------------------------------------------------------------------------------


def add_outbox(conn: Connection, run_id: str, kind: str, payload: dict[str, Any], now: float,
               publish_after: float) -> int:
    """Write one outbox row; returns its id."""
    outbox_id: int = conn.execute(
        insert(outbox)
        .values(run_id=run_id, kind=kind, payload=json.dumps(payload, separators=(",", ":")),
                created_at=now, publish_after=publish_after, publish_count=0)
        .returning(outbox.c.id)
    ).scalar_one()
    return outbox_id


def consume_outbox(conn: Connection, outbox_id: int) -> None:
    conn.execute(delete(outbox).where(outbox.c.id == outbox_id))


def any_due_dispatch(conn: Connection, now: float) -> bool:
    return conn.execute(
        select(steps.c.run_id).where(steps.c.status == StepStatus.DISPATCHED, steps.c.publish_after <= now).limit(1)
    ).first() is not None


def due_dispatches(conn: Connection, now: float, redelivery_after: float, limit: int) -> list[StepRow]:
    """Dispatched task steps nobody claimed in time; pushes their next publish time back (backoff)."""
    query = (
        select(steps)
        .where(steps.c.status == StepStatus.DISPATCHED, steps.c.kind == StepKind.TASK,
               steps.c.publish_after <= now)
        .order_by(steps.c.publish_after)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(conn.execute(query))
    for row in rows:
        conn.execute(
            update(steps)
            .where(steps.c.run_id == row.run_id, steps.c.position == row.position)
            .values(publish_after=now + redelivery_after * (2 ** min(row.publish_count, 5)),
                    publish_count=steps.c.publish_count + 1)
        )
    return cast("list[StepRow]", rows)


def any_due_outbox(conn: Connection, now: float) -> bool:
    return conn.execute(select(outbox.c.id).where(outbox.c.publish_after <= now).limit(1)).first() is not None


def due_outbox(conn: Connection, now: float, redelivery_after: float, limit: int) -> list[Any]:
    """The outbox rows nobody consumed in time (``id``, ``run_id``, ``kind``, ``payload``, ...); pushes their
    next publish time back (backoff)."""
    query = select(outbox).where(outbox.c.publish_after <= now).order_by(outbox.c.publish_after).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(conn.execute(query))
    for row in rows:
        backoff = redelivery_after * (2 ** min(row.publish_count, 5))
        conn.execute(
            update(outbox)
            .where(outbox.c.id == row.id)
            .values(publish_after=now + backoff, publish_count=outbox.c.publish_count + 1)
        )
    return rows


def delete_outbox_of(conn: Connection, run_id: str) -> None:
    conn.execute(delete(outbox).where(outbox.c.run_id == run_id))


def pending_outbox(conn: Connection, run_id: str | None = None) -> list[Any]:
    query = select(outbox).order_by(outbox.c.id)
    if run_id is not None:
        query = query.where(outbox.c.run_id == run_id)
    return list(conn.execute(query))


# --- timers -----------------------------------------------------------------------------------------


def insert_timer(conn: Connection, run_id: str, position: int, purpose: str, due_at: float) -> None:
    conn.execute(insert(timers).values(run_id=run_id, position=position, purpose=purpose, due_at=due_at))


def due_timers(conn: Connection, now: float, limit: int) -> list[TimerRow]:
    query = (
        select(timers)
        .where(timers.c.fired_at.is_(None), timers.c.due_at <= now)
        .order_by(timers.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return cast("list[TimerRow]", list(conn.execute(query)))


def any_due_timer(conn: Connection, now: float) -> bool:
    return conn.execute(
        select(timers.c.id).where(timers.c.fired_at.is_(None), timers.c.due_at <= now).limit(1)
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


# --- workers and recovery ---------------------------------------------------------------------------


def heartbeat(conn: Connection, worker_id: str, hostname: str, pid: int, now: float) -> None:
    updated = conn.execute(
        update(workers).where(workers.c.id == worker_id).values(heartbeat_at=now)
    ).rowcount
    if not updated:
        conn.execute(
            insert(workers).values(id=worker_id, hostname=hostname, pid=pid, started_at=now, heartbeat_at=now)
        )


def live_workers(conn: Connection, since: float) -> list[str]:
    return list(conn.execute(select(workers.c.id).where(workers.c.heartbeat_at >= since)).scalars())


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
    pending_message = select(outbox.c.id).where(outbox.c.run_id == runs.c.id).exists()
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
