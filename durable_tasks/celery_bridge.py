"""Everything that touches Celery itself: publishing messages, the coordinator task, the worker bootstep.

``celery -A proj worker`` is all a user starts: the bootstep runs the relay, the timer service and the
sweeper in a thread of every worker, and the coordinator is an ordinary task (``durable_tasks.advance``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, bootsteps

from . import coordinator, outbox, recovery, scheduler
from .cron import ScheduleBook, app_scope
from .logs import RateLimitedLog
from .messages import AdvanceMessage, Message, StepMessage
from .runtime import Runtime
from .schedule_sync import sync_schedules
from .timers import TimerBackend

logger = logging.getLogger("durable_tasks.worker")

ADVANCE_TASK = "durable_tasks.advance"


class CeleryPublisher:
    """Sends messages as Celery task messages: a step to its task, an advance to the coordinator task."""

    def __init__(self, app: Celery, queue: str | None) -> None:
        self.app = app
        self.queue = queue

    def publish(self, message: Message) -> None:
        if isinstance(message, StepMessage):
            self.app.send_task(message.task, args=message.args, kwargs=message.kwargs, task_id=message.task_id,
                               headers=message.to_headers(), add_to_parent=False,
                               retries=message.attempt - 1,  # task.request.retries as under Celery
                               **message.options)
        elif isinstance(message, AdvanceMessage):
            options = {"queue": self.queue} if self.queue else {}
            self.app.send_task(ADVANCE_TASK, args=[message.run_id], kwargs={"outbox_id": message.outbox_id},
                               add_to_parent=False, **options)
        else:
            raise TypeError(f"cannot publish {message!r}")


def register_coordinator_task(runtime: Runtime) -> Any:
    """The task that advances a run when a message asks for it (start, timers, resumes, recovery)."""

    @runtime.app.task(name=ADVANCE_TASK, ignore_result=True, shared=False)
    def advance(run_id: str, outbox_id: int | None = None) -> None:
        coordinator.advance(runtime, run_id, consume=outbox_id)

    return advance


class WorkerServices:
    """The background duties of a worker: relay, timers, schedules, sweeper (heartbeats run on their own thread).

    With a :class:`~durable_tasks.cron.ScheduleBook`, :meth:`start` first writes the schedules declared in this
    process's code to the database (retried by the services thread if the database is not there yet).
    """

    def __init__(self, runtime: Runtime, timers: TimerBackend, schedules: ScheduleBook | None = None) -> None:
        self.runtime = runtime
        self.schedules = schedules
        self._synced = schedules is None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = RateLimitedLog(logger, every=60.0)
        settings = runtime.settings
        # The relay's first query is a cheap read; running it every second lets the CLI's messages (left
        # in the outbox with publish_after=now) leave within about a second.
        relay_every = min(1.0, max(settings.redelivery_after / 4, 0.2))
        self._duties: list[tuple[str, float, Callable[[], Any]]] = [
            ("timers", settings.timer_interval, timers.fire_due),
            ("schedules", settings.timer_interval, lambda: scheduler.fire_due(runtime)),
            ("relay", relay_every, self._relay),
            ("sweeper", settings.sweep_interval, lambda: recovery.sweep(runtime)),
            ("schedule sync", settings.sweep_interval, self._sync_schedules),
        ]

    def _relay(self) -> int:
        return outbox.relay(self.runtime.store, self.runtime.publisher,
                            redelivery_after=self.runtime.settings.redelivery_after)

    def _sync_schedules(self) -> None:
        """Write the declared schedules once per start (a duty only until it has worked)."""
        if self._synced or self.schedules is None:
            return
        sync_schedules(self.runtime.store, self.schedules, app=app_scope(self.runtime.app))
        self._synced = True

    def start(self) -> None:
        self.runtime.store.ensure_ready()
        try:
            self._sync_schedules()  # before this worker takes anything, so its schedules fire from the start
        except Exception:
            self._failures.exception("schedule sync", "Durable schedule sync failed; retrying every %.1fs.",
                                     self.runtime.settings.sweep_interval)
        self.runtime.identity.start()  # first heartbeat now, so this worker is live at once
        self._thread = threading.Thread(target=self._run, name="durable-services", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        next_due = dict.fromkeys((name for name, _, _ in self._duties), 0.0)
        while not self._stop.is_set():
            now = time.monotonic()
            for name, every, duty in self._duties:
                if now < next_due[name]:
                    continue
                next_due[name] = now + every
                try:
                    duty()
                    self._failures.recovered(name, "Durable %s works again.", name)
                except Exception:  # the database or broker may be down, or a bug: say which, keep going
                    self._failures.exception(name, "Durable %s failed; retrying every %.1fs.", name, every)
            self._stop.wait(max(0.0, min(next_due.values()) - time.monotonic()))


def install_bootstep(runtime: Runtime, timers: TimerBackend, schedules: ScheduleBook | None = None) -> None:
    """Add the services to every worker of ``runtime.app`` (``celery -A proj worker``)."""

    class DurableServices(bootsteps.StartStopStep):
        """durable-tasks: outbox relay, timers, schedules, heartbeats and sweeper."""

        requires = {"celery.worker.components:Pool"}

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            self.services: WorkerServices | None = None

        def start(self, worker: Any) -> None:
            if runtime.settings.worker_services:
                self.services = WorkerServices(runtime, timers, schedules)
                self.services.start()

        def stop(self, worker: Any) -> None:
            if self.services is not None:
                self.services.stop()
            runtime.identity.stop()

    runtime.app.steps["worker"].add(DurableServices)
