"""The outbox (I2): messages are rows written in the same transaction as the change that causes them.

A :class:`UnitOfWork` is a chain of write transactions; each commit publishes the messages it wrote right
away (low latency). The *receiver* deletes a message's row in the transaction that acts on it (a step's
claim, a coordinator's advance), so a row that is still there after ``redelivery_after`` was lost on the
way, by the publisher or by the broker, and :func:`relay` publishes it again. Duplicates that this causes
are harmless: the journal turns them into no-ops (I1, I4).
"""

from __future__ import annotations

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


def relay(store: Store, publisher: Publisher, *, redelivery_after: float, limit: int = 200) -> int:
    """Publish again the outbox rows nobody consumed within ``redelivery_after``; returns how many."""
    with store.read() as conn:  # a read does not take SQLite's write lock
        if not queries.any_due_outbox(conn, time.time()):
            return 0
    with store.begin() as conn:
        messages = queries.due_outbox(conn, time.time(), redelivery_after, limit)
    sent = sum(publish_safely(publisher, message) for message in messages)
    if messages:
        logger.info("Relay re-published %d of %d unconsumed outbox messages.", sent, len(messages))
    return len(messages)
