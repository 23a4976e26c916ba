"""The outbox (I2): every message is durable in the same transaction as the change that causes it.

A :class:`UnitOfWork` is a chain of write transactions; each commit publishes the messages it wrote right
away (low latency). Two kinds of durable record back a message:

- an ``advance`` is a row of ``durable_outbox``; the coordinator deletes it in the transaction that acts on
  it;
- a ``dispatch`` (a task step's Celery message) is the step row itself, in status ``dispatched`` with its
  request and a ``publish_after`` time; the worker's claim moves it to ``running``. One row per step
  instead of an outbox row plus its deletion saves two statements on every step.

A record still unconsumed after ``redelivery_after`` was lost on the way, by the publisher or by the
broker, and :func:`relay` publishes it again (with exponential backoff). Duplicates that this causes are
harmless: the journal turns them into no-ops (I1, I4).
"""

from __future__ import annotations

import json
import logging
import time
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import Connection

from .store import queries
from .store.database import Store
from .store.queries import OutboxMessage

logger = logging.getLogger("durable_tasks.outbox")


class Publisher(Protocol):
    """Sends committed outbox messages to the broker (see ``celery_bridge.CeleryPublisher``)."""

    def publish(self, message: OutboxMessage) -> None: ...


class UnitOfWork:
    """Write transactions that publish their outbox messages after each commit.

    Use it as a context manager; :meth:`commit` and :meth:`begin` split the work into several transactions
    (the coordinator commits before it runs an inline step so no transaction is held during user code).
    """

    def __init__(self, store: Store, publisher: Publisher, *, redelivery_after: float) -> None:
        self.store = store
        self.publisher = publisher
        self.redelivery_after = redelivery_after
        self._transaction: Any = None
        self._conn: Connection | None = None
        self._pending: list[OutboxMessage] = []

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("UnitOfWork used outside a transaction")
        return self._conn

    def begin(self) -> UnitOfWork:
        self._transaction = self.store.begin()
        self._conn = self._transaction.__enter__()
        return self

    def commit(self) -> None:
        """Commit the open transaction, then publish the messages it wrote."""
        transaction, self._transaction, self._conn = self._transaction, None, None
        transaction.__exit__(None, None, None)
        pending, self._pending = self._pending, []
        for message in pending:
            publish_safely(self.publisher, message)

    def rollback(self, exc: BaseException) -> None:
        transaction, self._transaction, self._conn = self._transaction, None, None
        self._pending = []
        if transaction is not None:
            transaction.__exit__(type(exc), exc, exc.__traceback__)

    def send(self, run_id: str, kind: str, payload: dict[str, Any]) -> OutboxMessage:
        """Write a message to the outbox in the open transaction; it is published after commit."""
        now = time.time()
        message = queries.add_outbox(self.conn, run_id, kind, payload, now, now + self.redelivery_after)
        self._pending.append(message)
        return message

    def publish_after_commit(self, message: OutboxMessage) -> None:
        """Publish after commit a message whose durable record the caller wrote (a dispatched step row)."""
        self._pending.append(message)

    def __enter__(self) -> UnitOfWork:
        return self.begin()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._transaction is None:
            return
        if exc is None:
            self.commit()
        else:
            self.rollback(exc)


def publish_safely(publisher: Publisher, message: OutboxMessage) -> bool:
    """Publish one message; a broker failure is logged, not raised: the row stays and the relay retries."""
    try:
        publisher.publish(message)
    except Exception as exc:
        logger.warning(
            "Could not publish %s message %s for run %s (%s: %s); it stays in the outbox and the relay "
            "will send it again.", message.kind, message.id, message.run_id, type(exc).__name__, exc,
        )
        return False
    return True


def dispatch_message(run_id: str, position: int, step_key: str, attempt: int, task_id: str,
                     request: dict[str, Any]) -> OutboxMessage:
    """The Celery message of one attempt of a task step (its durable record is the step row)."""
    payload = {**request, "task_id": task_id, "position": position, "attempt": attempt, "step_key": step_key}
    return OutboxMessage(None, run_id, queries.DISPATCH, payload)


def relay(store: Store, publisher: Publisher, *, redelivery_after: float, limit: int = 200) -> int:
    """Publish again what nobody consumed within ``redelivery_after``; returns how many messages."""
    now = time.time()
    with store.read() as conn:  # a read does not take SQLite's write lock
        if not (queries.any_due_outbox(conn, now) or queries.any_due_dispatch(conn, now)):
            return 0
    with store.begin() as conn:
        messages = queries.due_outbox(conn, now, redelivery_after, limit)
        messages += [
            dispatch_message(row.run_id, row.position, row.step_key, row.attempt, row.celery_task_id,
                             json.loads(row.request))
            for row in queries.due_dispatches(conn, now, redelivery_after, limit)
        ]
    sent = sum(publish_safely(publisher, message) for message in messages)
    if messages:
        logger.info("Relay re-published %d of %d unconsumed messages.", sent, len(messages))
    return len(messages)
