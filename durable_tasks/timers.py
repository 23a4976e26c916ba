"""Durable timers: sleeps, retry backoffs and (later) event timeouts, kept in the ``durable_timers`` table.

The database is the source of truth. :class:`DatabaseTimers` is the embedded backend: every worker polls
for due timers (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers never fire the same timer twice) and
fires each one as a journaled transition. Other transports (Kafka delay topics) implement
:class:`TimerBackend` and call :func:`fire` when a timer comes due; the polling backend stays as the
reconciler that fires whatever a transport lost.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from .outbox import UnitOfWork
from .store import queries
from .store.schema import ACTIVE_STATUSES, STEP_DISPATCHED, STEP_RETRYING, STEP_SLEEPING, STEP_SUCCEEDED
from .transitions import redispatch, send_advance
from .workflow import TASK

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger("durable_tasks.timers")

SLEEP = "sleep"
RETRY = "retry"


class TimerBackend(Protocol):
    """Fires due timers; ``fire_due`` is called by the worker's service thread every ``timer_interval``."""

    def fire_due(self) -> int: ...


class DatabaseTimers:
    """The embedded timer backend: poll the timers table."""

    def __init__(self, durable: Durable, *, batch: int = 200) -> None:
        self.durable = durable
        self.batch = batch

    def fire_due(self) -> int:
        """Fire every timer that is due now (in batches); returns how many fired."""
        with self.durable.store.read() as conn:  # a read does not take SQLite's write lock
            if not queries.any_due_timer(conn, time.time()):
                return 0
        fired = 0
        while True:
            with self.durable.unit_of_work() as uow:
                due = queries.due_timers(uow.conn, time.time(), self.batch)
                for timer in due:
                    fired += fire(uow, timer)
            if len(due) < self.batch:
                return fired


def fire(uow: UnitOfWork, timer: Any) -> bool:
    """Fire one timer, exactly once: wake its sleep step or send its step's next attempt."""
    if not queries.fire_timer(uow.conn, timer.id, time.time()):
        return False
    run = queries.get_run(uow.conn, timer.run_id)
    step = queries.get_step(uow.conn, timer.run_id, timer.position)
    if run is None or run.status not in ACTIVE_STATUSES or step is None:
        return False
    if timer.purpose == SLEEP and step.status == STEP_SLEEPING:
        queries.update_step(uow.conn, step.run_id, step.position, status=STEP_SUCCEEDED, result="null",
                            finished_at=time.time())
        send_advance(uow, step.run_id)
    elif timer.purpose == RETRY and step.status == STEP_RETRYING:
        if step.kind == TASK:
            redispatch(uow, step, step.attempt + 1)
        else:  # an inline step runs again at the run's next replay
            queries.update_step(uow.conn, step.run_id, step.position, status=STEP_DISPATCHED,
                                attempt=step.attempt + 1)
            send_advance(uow, step.run_id)
    else:
        return False
    return True
