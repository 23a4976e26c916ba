"""Everything that touches Celery itself: publishing messages, the coordinator task, the worker bootstep.

``celery -A proj worker`` is all a user starts: the bootstep runs the relay, the timer service and the
sweeper in a thread of every worker, and the coordinator is an ordinary task (``durable_tasks.advance``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from celery import Celery, bootsteps, signals

from . import coordinator, outbox, recovery, retention, scheduler
from .celery_events import WorkerEvents
from .cron import ScheduleBook, app_scope
from .logs import RateLimitedLog
from .messages import AdvanceMessage, Message, StepMessage, TaskMessage, TimerMessage
from .observe import notify_recovered
from .runtime import Runtime
from .schedule_sync import sync_schedules
from .termination import Terminator, can_terminate
from .timers import TimerBackend
from .vocabulary import ProcessRole

logger = logging.getLogger("durable_tasks.worker")

ADVANCE_TASK = "durable_tasks.advance"


class TimerSink(Protocol):
    """Takes timer messages to a timer transport (``integrations.kafka.backend.KafkaTimers``)."""

    def send(self, message: TimerMessage) -> None: ...


class CeleryPublisher:
    """Sends messages as Celery task messages: a step to its task, an advance to the coordinator task.

    It also tells the relay where a message goes (Celery's router) and how many messages wait in a queue
    (a passive ``queue_declare``, which Redis and RabbitMQ answer).
    """

    def __init__(self, app: Celery, queue: str | None) -> None:
        self.app = app
        self.queue = queue
        self.timer_sink: TimerSink | None = None
        """Where timer messages go (the Kafka backend); None when timers stay in the database."""
        self._routes: dict[tuple[str, str | None], str] = {}
        self._declared: set[str] = set()

    def queue_of(self, message: Message) -> str | None:
        """The queue Celery routes ``message`` to (task_routes, the ``queue`` option, or the default)."""
        if isinstance(message, TimerMessage):
            return None  # not a broker queue: its outbox row ends when the transport confirms it
        if isinstance(message, StepMessage | TaskMessage):
            task, queue = message.task, message.options.get("queue")
        else:
            task, queue = ADVANCE_TASK, self.queue
        key = (task, queue)
        if key not in self._routes:
            route = self.app.amqp.router.route({"queue": queue} if queue else {}, task, (), {})
            self._routes[key] = route["queue"].name
        return self._routes[key]

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int | None]:
        """Messages waiting in each queue (0 when the queue does not exist); None where the broker cannot say."""
        depths: dict[str, int | None] = {}
        try:
            with self.app.connection_for_write() as connection:
                for queue in queues:
                    channel = connection.channel()
                    try:
                        depths[queue] = _queue_depth(channel, queue)
                    except connection.channel_errors:
                        depths[queue] = 0  # no such queue: nothing waits in it
                    finally:
                        with contextlib.suppress(Exception):
                            channel.close()
        except Exception:  # broker unreachable, or a transport without queue sizes: say nothing
            return dict.fromkeys(queues)
        return depths

    def publish(self, message: Message) -> None:
        # The run id is the Celery task id its monitoring events use (see durable_tasks.run_events), so a run's
        # tasks name it as their root and parent and Flower lists them under the run.
        queue = self.queue_of(message)
        # Celery declares the queue before every publish, through kombu's retrying wrapper (about 0.3 ms a
        # message); once a publish to it went through, this process skips that.
        declared: dict[str, Any] = {"declare": []} if queue in self._declared else {}
        if isinstance(message, StepMessage):
            self.app.send_task(message.task, args=message.args, kwargs=message.kwargs, task_id=message.task_id,
                               headers=message.to_headers(), add_to_parent=False,
                               retries=message.attempt - 1,  # task.request.retries as under Celery
                               root_id=message.run_id, parent_id=message.run_id, **message.options, **declared)
        elif isinstance(message, TimerMessage):
            if self.timer_sink is None:
                raise TypeError(f"timer {message.timer_id} was handed off, but no timer transport is configured")
            self.timer_sink.send(message)
        elif isinstance(message, TaskMessage):
            # The user's own message: its stable id is the Celery task id, which consumers use to drop duplicates.
            self.app.send_task(message.task, args=message.args, kwargs=message.kwargs, task_id=message.id,
                               add_to_parent=False, **message.options)
        elif isinstance(message, AdvanceMessage):
            options = {"queue": self.queue} if self.queue else {}
            self.app.send_task(ADVANCE_TASK, args=[message.run_id], kwargs={"outbox_id": message.outbox_id},
                               add_to_parent=False, root_id=message.run_id, parent_id=message.run_id, **options,
                               **declared)
        else:
            raise TypeError(f"cannot publish {message!r}")
        if queue is not None:
            self._declared.add(queue)


def _queue_depth(channel: Any, queue: str) -> int:
    # kombu's virtual transports (Redis, SQS, ...) count with their own ``_size``, which is what their
    # passive queue_declare reports too; that declare ignores Redis's global_keyprefix in its existence check.
    size = getattr(channel, "_size", None)
    if size is not None:
        return int(size(queue))
    return int(channel.queue_declare(queue=queue, passive=True).message_count)


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

    def __init__(self, runtime: Runtime, timers: TimerBackend, schedules: ScheduleBook | None = None,
                 terminator: Terminator | None = None) -> None:
        self.runtime = runtime
        self.timers = timers
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
            ("sweeper", settings.sweep_interval, self._sweep),
            ("retention", settings.retention_interval, lambda: retention.prune_expired(runtime)),
            ("schedule sync", settings.sweep_interval, self._sync_schedules),
        ]
        if terminator is not None:
            self._duties.append(("termination", TERMINATION_INTERVAL, terminator.check))

    def _relay(self) -> int:
        sent = outbox.relay(self.runtime.store, self.runtime.publisher,
                            redelivery_after=self.runtime.settings.redelivery_after, topics=self.runtime.topics)
        if sent:
            notify_recovered(self.runtime.observers, "relay_republished", sent)
        return sent

    def _sweep(self) -> recovery.SweepReport:
        report = recovery.sweep(self.runtime)
        for kind, count in (("leases_broken", report.leases_broken), ("stalled_runs", report.stalled)):
            if count:
                notify_recovered(self.runtime.observers, kind, count)
        return report

    def _sync_schedules(self) -> None:
        """Write the declared schedules once per start (a duty only until it has worked)."""
        if self._synced or self.schedules is None:
            return
        sync_schedules(self.runtime.store, self.schedules, app=app_scope(self.runtime.app))
        self._synced = True

    def start(self) -> None:
        self.runtime.store.ensure_ready()
        self.runtime.identity.role = ProcessRole.WORKER
        try:
            self._sync_schedules()  # before this worker takes anything, so its schedules fire from the start
        except Exception:
            self._failures.exception("schedule sync", "Durable schedule sync failed; retrying every %.1fs.",
                                     self.runtime.settings.sweep_interval)
        self.runtime.identity.start()  # first heartbeat now, so this worker is live at once
        if self.runtime.settings.kafka_consume_in_workers:
            self.timers.start()
        self._thread = threading.Thread(target=self._run, name="durable-services", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.timers.stop()

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


TERMINATION_INTERVAL = 0.5
"""Seconds between two looks at whether a step this worker runs was cancelled with terminate."""


def _terminator(runtime: Runtime, worker: Any) -> Terminator | None:
    """What terminates this worker's cancelled steps, if its pool can terminate tasks and it takes control
    commands (a worker revokes its own tasks through them)."""
    if not can_terminate(getattr(worker, "pool", None)):
        logger.info("This worker's pool (%s) cannot terminate tasks: a step cancelled with terminate runs on and "
                    "sees current_step().is_cancelled(). Use the prefork pool to terminate them.",
                    type(getattr(worker, "pool", None)).__name__)
        return None
    if not runtime.app.conf.worker_enable_remote_control:
        logger.warning("worker_enable_remote_control is off, so this worker cannot terminate steps cancelled with "
                       "terminate (it revokes its own tasks through a control command); they see "
                       "current_step().is_cancelled() instead.")
        return None
    return Terminator(runtime, worker.hostname)


def install_bootstep(runtime: Runtime, timers: TimerBackend, events: WorkerEvents,
                     on_worker_start: Callable[[Any], None] | None = None,
                     schedules: ScheduleBook | None = None) -> None:
    """Add the services to every worker of ``runtime.app`` (``celery -A proj worker``).

    Creating the bootstep is also how this process learns it is a worker: ``events`` starts sending as
    that worker (before the pool forks, so prefork children inherit it), and ``on_worker_start(worker)``
    runs in the worker's main process when it starts (the metrics endpoint).
    """

    class DurableServices(bootsteps.StartStopStep):
        """durable-tasks: outbox relay, timers, schedules, heartbeats, sweeper and monitoring events."""

        requires = {"celery.worker.components:Pool"}

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            self.services: WorkerServices | None = None
            events.attach(worker.hostname, worker.task_events)

        def start(self, worker: Any) -> None:
            if on_worker_start is not None:
                on_worker_start(worker)
            if runtime.settings.worker_services:
                self.services = WorkerServices(runtime, timers, schedules, _terminator(runtime, worker))
                self.services.start()

        def stop(self, worker: Any) -> None:
            if self.services is not None:
                self.services.stop()
            runtime.topics.close()  # waits briefly for Kafka to confirm records sent by this worker
            runtime.identity.stop()
            events.close()

    runtime.app.steps["worker"].add(DurableServices)

    def in_pool_child(**_: Any) -> None:
        runtime.identity.role = ProcessRole.POOL

    def pool_child_stops(**_: Any) -> None:
        runtime.identity.stop()

    # Pool children beat on their own (first task), under their own role; a clean exit says "stopped".
    signals.worker_process_init.connect(in_pool_child, weak=False)
    signals.worker_process_shutdown.connect(pool_child_stops, weak=False)
