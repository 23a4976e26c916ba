"""The transitions of event waits: a wait starts, an event is delivered to it or kept for a later wait.

Part of the one home of state changes with :mod:`durable_tasks.transitions` (which fires their timeouts): each
function runs in a :class:`~durable_tasks.outbox.UnitOfWork` and notes its transition for the observers.
"""

from __future__ import annotations

import time
from typing import Any

from .outbox import UnitOfWork
from .records import EventWait, NewEvent, StepRow, WaitRow, WrittenStep
from .store import event_queries, queries
from .transitions import _compact, _note_step, arm_timer, event_timeout_error
from .vocabulary import StepKind, StepStatus, TimerPurpose


def start_wait(uow: UnitOfWork, run_id: str, position: int, step_key: str, wait: EventWait, *,
               exists: bool) -> WrittenStep:
    """Journal an event wait: it takes a kept event at once, times out at once (``timeout=0``), or waits.

    A waiting step gets a row in ``durable_waits`` (how senders find it) and, with a timeout, a timer.
    ``exists``: an operator restarted this wait (``durable runs resume`` after a timeout).
    """
    queries.lock_run(uow.conn, run_id)  # again: after an inline step this transaction no longer holds it
    if wait.key is not None:
        event_queries.lock_correlation_key(uow.conn, wait.key)
    now = time.time()
    request = _compact(wait.request())
    columns: dict[str, Any] = {"request": request, "error": None, "result": None, "finished_at": None}
    while True:  # the kept event is locked (PostgreSQL) or the database is (SQLite): a retry is rare
        signal = event_queries.kept_signal(uow.conn, run_id, wait.key, wait.name, now)
        if signal is None or event_queries.consume_signal(uow.conn, signal.id, run_id, position, now):
            break
    if signal is not None:
        columns.update(status=StepStatus.SUCCEEDED, result=signal.payload, finished_at=now)
        detail: dict[str, Any] = {"event": wait.name, "event_id": signal.event_id}
    elif wait.until is not None and wait.until <= now:
        columns.update(status=StepStatus.FAILED, error=_compact(event_timeout_error(step_key, wait.request())),
                       finished_at=now)
        detail = {"event": wait.name, "error": columns["error"]}
    else:
        columns["status"] = StepStatus.WAITING
        event_queries.insert_wait(uow.conn, run_id=run_id, position=position, name=wait.name, correlation_key=wait.key,
                            created_at=now)
        if wait.until is not None:
            arm_timer(uow, run_id, position, TimerPurpose.EVENT_TIMEOUT, wait.until)
        detail = {"event": wait.name, "key": wait.key, "due_at": wait.until}
    if exists:
        queries.update_step(uow.conn, run_id, position, **columns)
    else:
        queries.insert_step(uow.conn, run_id=run_id, position=position, step_key=step_key, kind=StepKind.EVENT,
                            name=wait.name, created_at=now, **columns)
    step = WrittenStep(run_id, position, step_key, StepKind.EVENT, wait.name, columns["status"], request=request,
                       result=columns["result"], error=columns["error"], created_at=now,
                       finished_at=columns["finished_at"])
    _note_step(uow, step, columns["status"], **detail)
    return step


def deliver_event(uow: UnitOfWork, wait: WaitRow, event: NewEvent, *, expires_at: float) -> StepRow | None:
    """Give a new event to a waiting step (its run locked by the caller) and advance the run.

    The event is journaled as consumed by that step, so sending it again with the same id is a no-op.
    Returns the step; None when it no longer waits (it timed out or was cancelled meanwhile): nothing is
    written then.
    """
    now = time.time()
    step = queries.get_step(uow.conn, wait.run_id, wait.position)
    if step is None or step.status != StepStatus.WAITING:
        return None
    event_queries.insert_signal(uow.conn, event_id=event.event_id, name=event.name, run_id=wait.run_id,
                          correlation_key=event.key, payload=event.payload, created_at=now, expires_at=expires_at,
                          consumed_at=now, consumed_position=wait.position)
    queries.update_step(uow.conn, wait.run_id, wait.position, status=StepStatus.SUCCEEDED, result=event.payload,
                        finished_at=now)
    event_queries.delete_waits(uow.conn, wait.run_id, wait.position)
    queries.cancel_timers(uow.conn, wait.run_id, wait.position, now)
    _note_step(uow, step, StepStatus.SUCCEEDED, event=event.name, event_id=event.event_id)
    uow.send_advance(wait.run_id)
    return step


def keep_event(uow: UnitOfWork, event: NewEvent, *, expires_at: float) -> None:
    """Keep an event that no run waits for yet, for the first matching wait until ``expires_at``."""
    event_queries.insert_signal(uow.conn, event_id=event.event_id, name=event.name, run_id=event.run_id,
                          correlation_key=event.key, payload=event.payload, created_at=time.time(),
                          expires_at=expires_at)


def forget_expired_events(uow: UnitOfWork, now: float, limit: int = 500) -> int:
    """Delete events that expired before any wait took them (the sweeper); returns how many."""
    return event_queries.delete_expired_signals(uow.conn, now, limit)
