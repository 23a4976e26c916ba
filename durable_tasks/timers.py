"""Durable timers: sleeps and retry backoffs, kept in the ``durable_timers`` table.

The database is the source of truth. :class:`DatabaseTimers` is the embedded backend: every worker polls
for due timers (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers never fire the same timer twice) and
fires each one with :func:`durable_tasks.transitions.fire_timer`, an idempotent journaled transition. A
backend that carries timers elsewhere implements :class:`TimerBackend` and fires through the same
transition.
"""

from __future__ import annotations

import time
from typing import Protocol

from . import transitions
from .records import TimerRow
from .runtime import Runtime
from .store import queries


class TimerBackend(Protocol):
    """Fires due timers. ``fire_due`` is called by the worker's service thread every ``timer_interval``;
    ``start``/``stop`` bracket a worker's life (a backend with a consumer of its own runs it in between)."""

    def fire_due(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class DatabaseTimers:
    """The embedded timer backend: poll the timers table."""

    def __init__(self, runtime: Runtime, *, batch: int = 200, budget: float = 1.0) -> None:
        self.runtime = runtime
        self.batch = batch
        self.budget = budget
        """Seconds one call may spend on a backlog before it returns (the next call goes on), so the other duties
        of the worker's service thread and a stop request are never held up for long."""

    def fire_due(self) -> int:
        """Fire every timer that is due now (in batches); returns how many fired."""
        return len(self.fire_overdue(time.time()))

    def fire_overdue(self, before: float) -> list[TimerRow]:
        """Fire the pending timers due before ``before`` (in batches, for up to ``budget`` seconds); returns those
        that fired."""
        with self.runtime.store.read() as conn:  # a read does not take SQLite's write lock
            if not queries.any_due_timer(conn, before):
                return []
        fired: list[TimerRow] = []
        deadline = time.monotonic() + self.budget
        while True:
            with self.runtime.unit_of_work() as uow:
                due = queries.due_timers(uow.conn, before, self.batch)
                fired += [timer for timer in due if transitions.fire_timer(uow, timer)]
            if len(due) < self.batch or time.monotonic() > deadline:
                return fired

    def start(self) -> None:
        """Nothing to start: the worker's service thread polls."""

    def stop(self) -> None:
        """Nothing to stop."""
