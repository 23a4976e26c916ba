"""The words the journal is written in: statuses and kinds of runs, steps, attempts, timers and messages.

Each is a :class:`~enum.StrEnum`, so a member equals the text stored in the database
(``RunStatus.FAILED == "failed"``) and rows read back as plain strings compare with members directly.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is: ``pending`` until its first advance, then active until it finishes."""

    PENDING = "pending"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_RUN_STATUSES: tuple[RunStatus, ...] = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SLEEPING,
                                              RunStatus.WAITING)
FINISHED_RUN_STATUSES: tuple[RunStatus, ...] = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class StepStatus(StrEnum):
    """Where a step is. ``dispatched`` task steps are also their message's outbox record."""

    DISPATCHED = "dispatched"  # a message is on its way (or, for an inline step: it runs at the next replay)
    RUNNING = "running"  # a worker claimed it (task) or the coordinator runs it (inline)
    RETRYING = "retrying"  # an attempt failed; a timer holds the next one
    SLEEPING = "sleeping"  # a sleep whose timer has not fired
    WAITING = "waiting"  # an event wait: no event yet, and its timeout (if any) has not fired
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING_STEP_STATUSES: tuple[StepStatus, ...] = (StepStatus.DISPATCHED, StepStatus.RUNNING, StepStatus.RETRYING)


class StepKind(StrEnum):
    """What a step is: a Celery task, a function run by the coordinator, a durable sleep, a wait for an outside
    event, a child run, a patch marker, or a message of the user's own (``ctx.send_task``, ``ctx.publish``)."""

    TASK = "task"
    INLINE = "inline"
    SLEEP = "sleep"
    EVENT = "event"
    CHILD = "child"
    MARKER = "marker"
    MESSAGE = "message"


class AttemptStatus(StrEnum):
    """How one attempt of a step ended; ``resumed`` marks an operator's restart (a fresh retry budget)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"  # its worker died mid-attempt
    RESUMED = "resumed"


class TimerPurpose(StrEnum):
    """Why a timer exists: to end a durable sleep, to start a step's next attempt after its backoff, or to end
    an event wait that nothing answered in time."""

    SLEEP = "sleep"
    RETRY = "retry"
    EVENT_TIMEOUT = "event_timeout"


class EventDelivery(StrEnum):
    """What became of an event sent with ``durable.send_event``."""

    DELIVERED = "delivered"  # a run was waiting for it: its wait step has the payload, the run advances
    KEPT = "kept"  # no run waits for it yet: kept until the first matching wait, or until it expires
    DUPLICATE = "duplicate"  # an event with this event id was received before: nothing changed


class ProcessRole(StrEnum):
    """What a process that heartbeats is: a Celery worker's main process, a prefork pool child, or a client
    (a web process or script that started or advanced runs itself)."""

    WORKER = "worker"
    POOL = "pool"
    CLIENT = "client"


class OutboxKind(StrEnum):
    """Kinds of outgoing messages.

    ``advance`` messages are rows of ``durable_outbox``, consumed by a coordinator; a ``dispatch`` (a task step's
    Celery message) has the dispatched step row as its durable record. ``task_message`` and ``topic_message``
    rows are the user's own messages (a Celery task message, a Kafka record): nothing here consumes them, so
    each row ends when the broker or Kafka confirms it.
    """

    ADVANCE = "advance"
    DISPATCH = "dispatch"
    TIMER = "timer"  # a timer handed to a transport (Kafka); its row ends when the transport confirms it
    TASK_MESSAGE = "task_message"
    TOPIC_MESSAGE = "topic_message"


OWN_MESSAGE_KINDS: tuple[OutboxKind, ...] = (OutboxKind.TASK_MESSAGE, OutboxKind.TOPIC_MESSAGE)


class ScheduleSource(StrEnum):
    """Who writes a schedule's definition: the code (synced by workers) or ``durable cron import --apply``."""

    CODE = "code"
    IMPORT = "import"
