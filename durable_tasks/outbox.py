"""The outbox (I2): every message is durable in the same transaction as the change that causes it.

A :class:`UnitOfWork` is a chain of write transactions; each commit publishes the messages it wrote right
away (low latency) and hands its transitions to the observers. Two kinds of durable record back a message:

- an ``advance`` is a row of ``durable_outbox``; the coordinator deletes it in the transaction that acts on
  it;
- a ``dispatch`` (a task step's Celery message) is the step row itself, in status ``dispatched`` with its
  request and a ``publish_after`` time; the worker's claim moves it to ``running``. One row per step
  instead of an outbox row plus its deletion saves two statements on every step;
- a message of the user's own (:mod:`durable_tasks.outgoing`) is a ``task_message`` or ``topic_message`` row,
  which ends when the broker or Kafka confirms the message (nothing durable-side consumes it).

A record still unconsumed after ``redelivery_after`` was lost on the way, by the publisher or by the
broker, and :func:`relay` publishes it again (with exponential backoff). Duplicates that this causes are
harmless: the journal turns them into no-ops (I1, I4).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import Connection

from .logs import RateLimitedLog
from .messages import AdvanceMessage, Message, OwnMessage, StepMessage, TaskMessage, TimerMessage, own_message
from .observe import Observer, Transition, notify
from .outgoing import TopicSource, send_own
from .serialization import loads
from .store import queries
from .store.database import Store
from .vocabulary import OWN_MESSAGE_KINDS, OutboxKind

logger = logging.getLogger("durable_tasks.outbox")
_publish_failures = RateLimitedLog(logger, every=30.0)


class Publisher(Protocol):
    """Sends committed messages to the broker (see ``celery_bridge.CeleryPublisher``)."""

    def publish(self, message: Message) -> None: ...

    def queue_of(self, message: Message) -> str | None:
        """The broker queue ``message`` goes to; None when unknown."""
        ...

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int | None]:
        """How many messages wait in each queue; None where the broker cannot say."""
        ...


class UnitOfWork:
    """Write transactions that publish their messages and report their transitions after each commit.

    Use it as a context manager; :meth:`commit` and :meth:`begin` split the work into several transactions
    (the coordinator commits before it runs an inline step so no transaction is held during user code).
    With ``autocommit`` each statement commits on its own without waiting for the disk
    (:meth:`Store.autocommit`): for writes recovery does not depend on, such as a step's claim.
    """

    def __init__(self, store: Store, publisher: Publisher, *, redelivery_after: float,
                 observers: Sequence[Observer] = (), autocommit: bool = False,
                 timer_window: float | None = None, topics: TopicSource | None = None) -> None:
        self.store = store
        self.publisher = publisher
        self.redelivery_after = redelivery_after
        self.timer_window = timer_window
        """With a timer transport: timers due within this many seconds go to it at once (others later)."""
        self.observers = observers
        self.autocommit = autocommit
        self.topics = topics
        self._transaction: AbstractContextManager[Connection] | None = None
        self._conn: Connection | None = None
        self._pending: list[Message] = []
        self._own: list[OwnMessage] = []
        self._noted: list[Transition] = []
        self._after_commit: list[Callable[[], None]] = []

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("UnitOfWork used outside a transaction")
        return self._conn

    def begin(self) -> UnitOfWork:
        self._transaction = self.store.autocommit() if self.autocommit else self.store.begin()
        self._conn = self._transaction.__enter__()
        return self

    def commit(self) -> None:
        """Commit the open transaction, then publish its messages and report its transitions."""
        transaction, self._transaction, self._conn = self._transaction, None, None
        if transaction is not None:
            transaction.__exit__(None, None, None)
        self.committed()

    def committed(self) -> None:
        """Publish what the committed transaction wrote, report its transitions and run its callbacks."""
        pending, self._pending = self._pending, []
        for message in pending:
            publish_safely(self.publisher, message)
        own, self._own = self._own, []
        if own:
            send_own(self.store, self.publisher, self.topics, own)
        noted, self._noted = self._noted, []
        if noted and self.observers:
            notify(self.observers, noted)
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self, exc: BaseException) -> None:
        transaction, self._transaction, self._conn = self._transaction, None, None
        self._pending = []
        self._own = []
        self._noted = []
        self._after_commit = []
        if transaction is not None:
            transaction.__exit__(type(exc), exc, exc.__traceback__)

    def send_advance(self, run_id: str, *, announce: Mapping[str, Any] | None = None,
                     cancel: Mapping[str, Any] | None = None) -> None:
        """Ask a coordinator to replay the run: an outbox row, published after commit.

        ``announce`` describes an operator's change that the worker consuming the message repeats to the
        observers (see :func:`durable_tasks.transitions.announce_run`); ``cancel`` (``reason``, ``terminate``)
        asks it to cancel the run instead (a parent's cancel reaching its children).
        """
        now = time.time()
        payload: dict[str, Any] = {"announce": announce} if announce else {}
        if cancel:
            payload["cancel"] = dict(cancel)
        queue = self.publisher.queue_of(AdvanceMessage(run_id, None))
        outbox_id = queries.add_outbox(self.conn, run_id, OutboxKind.ADVANCE, payload, now,
                                       now + self.redelivery_after, queue)
        self._pending.append(AdvanceMessage(run_id, outbox_id))

    def send_timer(self, timer_id: int, run_id: str, due_at: float) -> None:
        """Hand a timer to the timer transport after commit: an outbox row, deleted when the transport
        confirms it (the relay sends it again until then)."""
        now = time.time()
        outbox_id = queries.add_outbox(self.conn, run_id, OutboxKind.TIMER, {"timer_id": timer_id, "due_at": due_at},
                                       now, now + self.redelivery_after)
        self._pending.append(TimerMessage(timer_id, run_id, due_at, outbox_id))

    def send_message(self, message: OwnMessage, payload: str) -> None:
        """A message of the user's own (``payload`` is its encoded outbox payload): an outbox row, sent after
        commit; the row ends when the broker or Kafka confirms the message."""
        now = time.time()
        kind = OutboxKind.TASK_MESSAGE if isinstance(message, TaskMessage) else OutboxKind.TOPIC_MESSAGE
        outbox_id = queries.add_outbox(self.conn, message.run_id, kind, payload, now, now + self.redelivery_after)
        self._own.append(replace(message, outbox_id=outbox_id))

    def publish_after_commit(self, message: Message) -> str | None:
        """Publish after commit a message whose durable record the caller wrote (a dispatched step row);
        returns the queue it goes to, for that record."""
        self._pending.append(message)
        return self.publisher.queue_of(message)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this transaction commits (never if it rolls back): caches of committed state."""
        self._after_commit.append(callback)

    def note(self, transition: Transition) -> None:
        """Report ``transition`` to the observers once this transaction commits."""
        self._noted.append(transition)

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


def publish_safely(publisher: Publisher, message: Message) -> bool:
    """Publish one message; a broker failure is logged, not raised: the record stays and the relay retries."""
    try:
        publisher.publish(message)
    except Exception:
        what = (f"step {message.step_key!r} attempt {message.attempt}" if isinstance(message, StepMessage)
                else f"timer {message.timer_id}" if isinstance(message, TimerMessage)
                else f"message {message.id}" if isinstance(message, TaskMessage) else "advance")
        _publish_failures.exception(
            "publish", "Could not publish the %s message of run %s; it stays in the outbox and the relay will "
            "send it again.", what, message.run_id, level=logging.WARNING)
        return False
    _publish_failures.recovered("publish", "Publishing works again.")
    return True


PASSED_GRACE = 5.0
"""Seconds after the queue delivered a later message before an unclaimed one counts as lost (it may sit in a
worker's prefetch buffer for a moment)."""


def relay(store: Store, publisher: Publisher, *, redelivery_after: float, limit: int = 200,
          topics: TopicSource | None = None) -> int:
    """Publish again the messages the broker lost; returns how many.

    A message still unconsumed ``redelivery_after`` seconds after it was published is either waiting in its
    queue behind a backlog, or lost. Queues are FIFO, so it is lost when its queue is empty, or when the queue
    already delivered a message published after it (:func:`queries.queue_passed`); otherwise it is still
    queued and is looked at again later. Where the broker cannot say how many messages a queue holds, or
    the message's queue is unknown (rows from before this check existed), it is published again as it is.

    A message of the user's own is different: nothing here consumes it, and its row ends when the broker (or
    Kafka, through ``topics``) confirms it. A row still there was never confirmed, so it is sent again, with
    the same id, whatever its queue holds.
    """
    now = time.time()
    with store.read() as conn:  # a read does not take SQLite's write lock
        if not (queries.any_due_outbox(conn, now) or queries.any_due_dispatch(conn, now)):
            return 0
    recheck = now + min(redelivery_after, PASSED_GRACE)
    with store.begin() as conn:
        waiting: list[tuple[OutboxKind, Any]] = [
            *((OutboxKind.ADVANCE, row) for row in queries.due_outbox(conn, now, limit)),
            *((OutboxKind.DISPATCH, row) for row in queries.due_dispatches(conn, now, limit))]
        waiting.sort(key=lambda item: item[1].published_at or 0.0)
        depths = publisher.queue_depths({row.queue for _, row in waiting if row.queue})
        held: set[str] = set()  # queues whose oldest waiting message is still queued: so are the later ones
        messages: list[Message] = []
        own: list[OwnMessage] = []
        for kind, row in waiting:
            if kind == OutboxKind.ADVANCE and row.kind in OWN_MESSAGE_KINDS:  # never confirmed by its broker
                queries.resent(conn, OutboxKind(row.kind), row, now, redelivery_after)
                own.append(own_message(row.run_id, row.id, loads(row.payload)))
                continue
            queue = row.queue
            lost = (queue is None or row.published_at is None or depths.get(queue) in (None, 0)
                    or (queue not in held and queries.queue_passed(conn, queue, row.published_at,
                                                                   claimed_before=now - PASSED_GRACE)))
            if not lost:
                held.add(queue)
                queries.check_again(conn, kind, row, recheck)
                continue
            queries.resent(conn, kind, row, now, redelivery_after)
            messages.append(_message_of(kind, row))
    sent = sum(publish_safely(publisher, message) for message in messages)
    if own:
        sent += send_own(store, publisher, topics, own)
    if messages or own:
        logger.info("Relay re-published %d of %d lost or unconfirmed messages.", sent, len(messages) + len(own))
    return len(messages) + len(own)


def _message_of(kind: OutboxKind, row: Any) -> Message:
    """The message an overdue record stands for: a step's attempt (a step row), or an outbox row's message."""
    if kind == OutboxKind.DISPATCH:
        return StepMessage.from_step(row)
    if row.kind == OutboxKind.TIMER:
        payload = json.loads(row.payload)
        return TimerMessage(payload["timer_id"], row.run_id, payload["due_at"], row.id)
    return AdvanceMessage(row.run_id, row.id)
