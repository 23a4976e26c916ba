"""Everything that touches Celery itself: publishing outbox messages, the coordinator task, the bootstep.

``celery -A proj worker`` is all a user starts: the bootstep runs the relay, the timer service and the
sweeper in a thread of every worker, and the coordinator is an ordinary task (``durable_tasks.advance``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import bootsteps

from . import coordinator, outbox, recovery
from .store.queries import ADVANCE, DISPATCH, OutboxMessage

if TYPE_CHECKING:
    from celery import Celery

    from .app import Durable

logger = logging.getLogger("durable_tasks.worker")

ADVANCE_TASK = "durable_tasks.advance"


class CeleryPublisher:
    """Sends outbox messages as Celery task messages; counts them (the benchmark reports per-step figures)."""

    def __init__(self, app: Celery, queue: str | None) -> None:
        self.app = app
        self.queue = queue
        self.published = 0

    def publish(self, message: OutboxMessage) -> None:
        payload = message.payload
        if message.kind == DISPATCH:
            headers = {"durable": {
                "run": message.run_id, "position": payload["position"], "attempt": payload["attempt"],
                "step_key": payload["step_key"], "outbox": message.id, "retry": payload.get("retry"),
            }}
            self.app.send_task(payload["task"], args=payload["args"], kwargs=payload["kwargs"],
                               task_id=payload["task_id"], headers=headers, add_to_parent=False,
                               retries=payload["attempt"] - 1,  # task.request.retries as under Celery
                               **payload.get("options", {}))
        elif message.kind == ADVANCE:
            options = {"queue": self.queue} if self.queue else {}
            self.app.send_task(ADVANCE_TASK, args=[message.run_id], kwargs={"outbox_id": message.id},
                               add_to_parent=False, **options)
        else:
            raise ValueError(f"unknown outbox message kind {message.kind!r}")
        self.published += 1


def register_coordinator_task(durable: Durable) -> Any:
    """The task that advances a run when a message asks for it (start, timers, resumes, recovery)."""

    @durable.app.task(name=ADVANCE_TASK, ignore_result=True, shared=False)
    def advance(run_id: str, outbox_id: int | None = None) -> None:
        coordinator.advance(durable, run_id, consume=outbox_id)

    return advance


class WorkerServices:
    """The background duties of a worker: relay, timers, sweeper (heartbeats run on their own thread)."""

    def __init__(self, durable: Durable) -> None:
        self.durable = durable
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        settings = durable.settings
        # The relay's first query is a cheap read; running it every second lets the CLI's messages (left
        # in the outbox with publish_after=now) leave within about a second.
        relay_every = min(1.0, max(settings.redelivery_after / 4, 0.2))
        self._duties: list[tuple[str, float, Callable[[], Any]]] = [
            ("timers", settings.timer_interval, durable.timers.fire_due),
            ("relay", relay_every, self._relay),
            ("sweeper", settings.sweep_interval, lambda: recovery.sweep(durable)),
        ]

    def _relay(self) -> int:
        return outbox.relay(self.durable.store, self.durable.publisher,
                            redelivery_after=self.durable.settings.redelivery_after)

    def start(self) -> None:
        self.durable.store.ensure_ready()
        _ = self.durable.identity.worker_id  # first heartbeat now, so this worker is live at once
        self._thread = threading.Thread(target=self._run, name="durable-services", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        next_due = dict.fromkeys((name for name, _, _ in self._duties), 0.0)
        failing: set[str] = set()
        while not self._stop.is_set():
            now = time.monotonic()
            for name, every, duty in self._duties:
                if now < next_due[name]:
                    continue
                next_due[name] = now + every
                try:
                    duty()
                    if name in failing:
                        failing.discard(name)
                        logger.warning("Durable %s recovered.", name)
                except Exception as exc:  # the database or broker may be down: log once, keep going
                    if name not in failing:
                        failing.add(name)
                        logger.error("Durable %s failed (%s: %s); retrying.", name, type(exc).__name__, exc)
            self._stop.wait(max(0.0, min(next_due.values()) - time.monotonic()))


def install_bootstep(durable: Durable) -> None:
    """Add the services to every worker of ``durable.app`` (``celery -A proj worker``)."""

    class DurableServices(bootsteps.StartStopStep):
        """durable-tasks: outbox relay, timers, heartbeats and sweeper."""

        requires = {"celery.worker.components:Pool"}

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            self.services: WorkerServices | None = None

        def start(self, worker: Any) -> None:
            if durable.settings.worker_services:
                self.services = WorkerServices(durable)
                self.services.start()

        def stop(self, worker: Any) -> None:
            if self.services is not None:
                self.services.stop()
            durable.identity.stop()

    durable.app.steps["worker"].add(DurableServices)
