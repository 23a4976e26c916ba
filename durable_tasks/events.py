"""Outside events for waiting runs: ``durable.send_event``, correlation keys, and approval tokens.

An event is addressed to a run (its id, or a signed token that names it) or to a correlation key that a
run waits on (``ctx.wait_for_event("approved", key="order-42")``). Sending it, in one transaction:

- a run that waits for it gets it: the wait step journals the payload as its result and the run advances;
- otherwise the event is kept (``event_retention``, 7 days by default) and the first wait that matches it
  takes it at once;
- an event id that was sent before changes nothing (at-least-once senders are harmless).

Every writer locks the run row first, like the coordinator. A wait on a key and an event sent to that key
share no row until one of them is written, so both also take a lock on the key (PostgreSQL advisory lock;
SQLite's write lock serialises them anyway): neither can miss the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy.exc import IntegrityError

from . import event_transitions, tokens
from .config import Settings
from .durations import parse_duration
from .errors import ConfigurationError, InvalidStateError, RunNotFoundError
from .outbox import UnitOfWork
from .records import NewEvent, SignalRow, StepRow, check_text
from .serialization import dumps
from .store import event_queries, queries
from .store.database import Store
from .vocabulary import ACTIVE_RUN_STATUSES, EventDelivery

MAX_KEY_ROUNDS = 50  # a wait that appears while we keep the event on its key sends us round again


@dataclass(frozen=True, slots=True)
class EventReceipt:
    """What became of an event: ``delivered`` to a waiting step, ``kept`` for a later wait, or a ``duplicate``.

    ``run_id`` and ``step_key`` name the run and wait step that took it (``delivered``); for a ``kept``
    event, ``run_id`` is the run it was sent to (None when sent to a key) and ``expires_at`` when it will be
    dropped unless a wait takes it first.
    """

    outcome: EventDelivery
    event_id: str
    name: str
    run_id: str | None = None
    key: str | None = None
    step_key: str | None = None
    expires_at: float | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome == EventDelivery.DELIVERED


class EventSender:
    """Sends events to the runs of one store (``durable.send_event``, ``durable events send``)."""

    def __init__(self, store: Store, unit_of_work: Callable[[], UnitOfWork], settings: Settings) -> None:
        self.store = store
        self.unit_of_work = unit_of_work
        self.settings = settings

    # --- sending -------------------------------------------------------------------------------------

    def send(self, run_id: str | None = None, name: str | None = None, payload: Any = None, *,
             key: str | None = None, event_id: str | None = None, token: str | None = None) -> EventReceipt:
        """Deliver or keep one event; see :meth:`durable_tasks.Durable.send_event`."""
        claims = None
        if token is not None:
            if run_id is not None or key is not None or event_id is not None:
                raise ConfigurationError("An event token names its run and its event id: send_event(token=..., "
                                         "payload=...) takes no run_id, key or event_id besides it.")
            claims = tokens.verify(self.settings.event_secret, token, now=time.time())
            if name is not None and name != claims.name:
                raise ConfigurationError(f"This token is for event {claims.name!r}, not {name!r}. Nothing was "
                                         "delivered.")
            run_id, name, event_id = claims.run_id, claims.name, claims.event_id
        if (run_id is None) == (key is None):
            raise ConfigurationError(
                "send_event needs one address: a run id (send_event(run_id, name, payload)), a correlation key "
                "(send_event(key='order-42', name=..., payload=...)) or a token (send_event(token=..., "
                f"payload=...)); got run_id={run_id!r} and key={key!r}.")
        check_text(run_id, "A run id", optional=True)
        check_text(name, "An event name")
        assert name is not None  # for the type checker: check_text refused None
        target = f"run {run_id}" if run_id is not None else f"correlation key {key!r}"
        text = dumps(payload, what=f"payload of event {name!r} for {target}",
                     max_bytes=self.settings.max_payload_bytes)
        event = NewEvent(event_id if event_id is not None else str(uuid4()), name, text, run_id, key)
        try:
            receipt = self._to_run(event) if event.run_id is not None else self._to_key(event)
        except IntegrityError:
            # The same event id was sent at the same moment by someone else, who won: ours is the duplicate.
            with self.store.read() as conn:
                existing = event_queries.signal_by_event_id(conn, event.event_id)
            if existing is None:
                raise
            receipt = _duplicate(existing)
        if claims is not None and receipt.outcome == EventDelivery.DUPLICATE:
            with self.store.read() as conn:
                first = event_queries.signal_by_event_id(conn, event.event_id)
            raise tokens.used_error(claims, first.created_at if first is not None else None)
        return receipt

    def _to_run(self, event: NewEvent) -> EventReceipt:
        assert event.run_id is not None
        with self.unit_of_work() as uow:
            run = queries.get_run(uow.conn, event.run_id, lock=True)  # first, like every writer
            existing = event_queries.signal_by_event_id(uow.conn, event.event_id)
            if existing is not None:
                return _duplicate(existing)
            if run is None:
                raise RunNotFoundError(f"No run with id {event.run_id!r} in the durable store at "
                                       f"{self.store.redacted_url()}; event {event.name!r} was not stored.")
            if run.status not in ACTIVE_RUN_STATUSES:
                raise InvalidStateError(
                    f"Run {run.id} is {run.status}; a finished run takes no events, so event {event.name!r} was "
                    "not stored. To continue its work, start a new run (or `durable runs fork`).")
            wait = event_queries.wait_of_run(uow.conn, run.id, event.name)
            expires_at = time.time() + self.settings.event_retention
            step = event_transitions.deliver_event(uow, wait, event, expires_at=expires_at) if wait else None
            if step is not None:
                return _delivered(event, step)
            event_transitions.keep_event(uow, event, expires_at=expires_at)
            return EventReceipt(EventDelivery.KEPT, event.event_id, event.name, event.run_id, expires_at=expires_at)

    def _to_key(self, event: NewEvent) -> EventReceipt:
        assert event.key is not None
        for _ in range(MAX_KEY_ROUNDS):
            with self.unit_of_work() as uow:
                existing = event_queries.signal_by_event_id(uow.conn, event.event_id)
                if existing is not None:
                    return _duplicate(existing)
                wait = event_queries.wait_on_key(uow.conn, event.key, event.name)
                if wait is not None:
                    run = queries.get_run(uow.conn, wait.run_id, lock=True)
                    current = event_queries.get_wait(uow.conn, wait.run_id, wait.position)
                    expires_at = time.time() + self.settings.event_retention
                    if run is not None and run.status in ACTIVE_RUN_STATUSES and current is not None:
                        step = event_transitions.deliver_event(uow, current, event, expires_at=expires_at)
                        if step is not None:
                            return _delivered(event, step)
                    continue  # that wait ended meanwhile: look again
                event_queries.lock_correlation_key(uow.conn, event.key)
                if event_queries.wait_on_key(uow.conn, event.key, event.name) is not None:
                    continue  # a wait committed meanwhile: start over, locking its run first
                expires_at = time.time() + self.settings.event_retention
                event_transitions.keep_event(uow, event, expires_at=expires_at)
                return EventReceipt(EventDelivery.KEPT, event.event_id, event.name, key=event.key,
                                    expires_at=expires_at)
        raise InvalidStateError(
            f"Event {event.name!r} for key {event.key!r} met {MAX_KEY_ROUNDS} waits that ended while it was being "
            f"delivered, so it was not stored. Send it again (with event_id={event.event_id!r} it is delivered once).")

    # --- tokens --------------------------------------------------------------------------------------

    def token(self, run_id: str, name: str, ttl: float | str | timedelta) -> str:
        """A signed token that delivers event ``name`` to run ``run_id`` once within ``ttl``.

        Made without a database read (a step can make one for its own run, also under the eager runner);
        the run is checked when the token is used.
        """
        check_text(run_id, "A run id")
        check_text(name, "An event name")
        seconds = parse_duration(ttl)
        if seconds <= 0:
            raise ConfigurationError(f"An event token's ttl must be longer than zero, not {ttl!r}.")
        return tokens.sign(self.settings.event_secret, run_id, name, expires_at=time.time() + seconds)


def _delivered(event: NewEvent, step: StepRow) -> EventReceipt:
    return EventReceipt(EventDelivery.DELIVERED, event.event_id, event.name, step.run_id, event.key, step.step_key)


def _duplicate(existing: SignalRow) -> EventReceipt:
    return EventReceipt(EventDelivery.DUPLICATE, existing.event_id, existing.name, existing.run_id,
                        existing.correlation_key, expires_at=None if existing.consumed_at else existing.expires_at)
