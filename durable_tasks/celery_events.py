"""Sending monitoring events through Celery's event dispatcher, from worker processes only.

A process is a worker when the durable bootstep was created in it (``celery -A proj worker``, which runs
the bootstep before it starts or forks its pool, so prefork children inherit it). Any other process, a
web server starting runs, ``Workflow.run`` in a script, a chain started where its tasks are registered,
the ``durable`` command, sends nothing: Celery's event state (and so Flower) lists every host name that
sends a task event as a worker, and a client would show up as a phantom worker for minutes.

Events follow the worker's own switch for task events, ``-E`` (``worker_send_task_events``): without
it a worker sends no run events either, and says so once when it starts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery
from celery.events import Event
from celery.events.event import group_from
from celery.utils.time import utcoffset

from .logs import RateLimitedLog

logger = logging.getLogger("durable_tasks.run_events")
_failures = RateLimitedLog(logger, every=60.0)

EVENTS_OFF_WARNING = (
    "Worker %s runs without task events, so Flower shows neither its tasks nor durable runs. Start it with "
    "-E (celery -A proj worker -E) or set worker_send_task_events = True."
)


class WorkerEvents:
    """An :class:`~durable_tasks.run_events.EventSink` that publishes on the broker's event exchange.

    Inactive until :meth:`attach` names the worker; each process (a prefork child too) opens its own
    connection on first use. Sending is best-effort: a failure drops the connection, is logged
    (rate-limited) and the next event opens a new one.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.hostname: str | None = None
        self.enabled = False
        self._lock = threading.Lock()
        self._pid = 0
        self._dispatcher: Any = None
        self._connection: Any = None

    def attach(self, hostname: str, task_events: bool) -> None:
        """This process is the worker ``hostname``; ``task_events`` is its ``-E`` switch."""
        self.hostname = hostname
        self.enabled = bool(task_events)
        if not self.enabled:
            logger.warning(EVENTS_OFF_WARNING, hostname)

    @property
    def active(self) -> bool:
        return self.enabled and self.hostname is not None

    def send(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Publish one commit's events as this worker (no-op outside a worker or without ``-E``).

        Events of one group (``task``, ``durable``) go out as one message, as Celery's worker batches its
        own (routing key ``task.multi``): a broker round trip costs about a millisecond here, so a step's
        three or four events would otherwise cost more than its commit.
        """
        if not self.active or not events:
            return
        groups: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
        for type_, fields in events:
            groups.setdefault(group_from(type_), []).append((type_, fields))
        with self._lock:
            try:
                dispatcher = self._current()
                for group, members in groups.items():
                    self._publish(dispatcher, group, members)
            except Exception:
                self._close()
                raise
        _failures.recovered("send", "Sending monitoring events works again.")

    def _publish(self, dispatcher: Any, group: str, members: list[tuple[str, Mapping[str, Any]]]) -> None:
        if len(members) == 1:
            type_, fields = members[0]
            dispatcher.send(type_, **fields)
            return
        body = [Event(type_, hostname=self.hostname, utcoffset=utcoffset(), pid=os.getpid(),
                      clock=self.app.clock.forward(), **fields) for type_, fields in members]
        dispatcher.producer.publish(body, routing_key=f"{group}.multi", exchange=dispatcher.exchange.name,
                                    declare=[dispatcher.exchange], serializer=dispatcher.serializer,
                                    headers=dispatcher.headers, delivery_mode=dispatcher.delivery_mode)

    def _current(self) -> Any:
        if self._pid != os.getpid() or self._dispatcher is None:
            # A forked child must not share its parent's socket.
            self._dispatcher = self._connection = None
            self._connection = self.app.connection_for_write()
            self._dispatcher = self.app.events.Dispatcher(self._connection, hostname=self.hostname, enabled=True,
                                                          buffer_while_offline=False)
            self._pid = os.getpid()
        return self._dispatcher

    def _close(self) -> None:
        dispatcher, connection, self._dispatcher, self._connection = self._dispatcher, self._connection, None, None
        for closable in (dispatcher, connection):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # already broken; we only let go of it
                    logger.debug("closing the event connection failed", exc_info=True)

    def close(self) -> None:
        """Close this process's event connection (worker shutdown)."""
        with self._lock:
            if self._pid == os.getpid():
                self._close()
