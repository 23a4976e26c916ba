"""The messages durable-tasks sends: a task step's attempt, a request to advance a run, and the user's own.

A :class:`StepMessage` is an ordinary Celery task message for the user's task, plus a ``durable`` header
that tells the step wrapper which run, step and attempt it belongs to. The wrapper reads the header back
with :meth:`StepMessage.from_headers`. An :class:`AdvanceMessage` calls the coordinator task.

A :class:`TaskMessage` (``ctx.send_task``, ``current_step().send_task``) and a :class:`TopicMessage`
(``ctx.publish``, ``current_step().publish``) are messages of the user's own, sent through the outbox: each
carries a stable ``id`` (``run:step`` for a workflow's message, ``run:step:n`` for the n-th message of a task
step) that consumers use to drop duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .records import StepRow
from .serialization import loads

HEADER = "durable"


@dataclass(frozen=True, slots=True)
class StepMessage:
    """One attempt of a task step, as sent to the broker.

    ``retry`` is the step's retry policy (``RetryPolicy.to_json()``), resolved when the step was dispatched
    from the task's ``@durable.step(retry=...)`` or else the workflow's default. It travels with the
    message because the worker that runs the task may not import the workflow (task-only workers), and
    an attempt is judged by the policy the step was dispatched with, not by whatever a worker has now.
    ``tick`` (``Tick.to_json()``) travels the same way for runs a schedule started: ``current_step().tick``.
    """

    run_id: str
    position: int
    step_key: str
    attempt: int
    task: str
    task_id: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    retry: dict[str, Any] | None = None
    trace: str | None = None
    tick: dict[str, Any] | None = None

    def to_headers(self) -> dict[str, Any]:
        """The message's Celery headers: the step's address in the journal, the run's trace context and, for a
        scheduled run, its tick."""
        header = {"run": self.run_id, "position": self.position, "step_key": self.step_key,
                  "attempt": self.attempt, "retry": self.retry}
        if self.trace:
            header["trace"] = self.trace
        if self.tick is not None:
            header["tick"] = self.tick
        return {HEADER: header}

    @classmethod
    def from_headers(cls, header: Mapping[str, Any], *, task: str, task_id: str, args: list[Any],
                     kwargs: dict[str, Any]) -> StepMessage:
        """Read a delivered message back (``header`` is ``task.request.durable``)."""
        return cls(run_id=header["run"], position=header["position"], step_key=header["step_key"],
                   attempt=header["attempt"], task=task, task_id=task_id, args=args, kwargs=kwargs,
                   retry=header.get("retry"), trace=header.get("trace"), tick=header.get("tick"))

    @classmethod
    def from_request(cls, run_id: str, position: int, step_key: str, attempt: int, task_id: str,
                     request: Mapping[str, Any]) -> StepMessage:
        """The message of one attempt from the step's journaled request (see :func:`step_request`)."""
        return cls(run_id=run_id, position=position, step_key=step_key, attempt=attempt, task=request["task"],
                   task_id=task_id, args=list(request["args"]), kwargs=dict(request["kwargs"]),
                   options=dict(request.get("options") or {}), retry=request.get("retry"),
                   trace=request.get("trace"), tick=request.get("tick"))

    @classmethod
    def from_step(cls, step: StepRow) -> StepMessage:
        """The message of a dispatched step row, to publish again (the relay)."""
        if step.request is None or step.celery_task_id is None:
            raise ValueError(f"step {step.step_key!r} of run {step.run_id} was never dispatched")
        return cls.from_request(step.run_id, step.position, step.step_key, step.attempt, step.celery_task_id,
                                loads(step.request))


def step_request(task: str, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any],
                 retry: dict[str, Any] | None, trace: str | None = None,
                 tick: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a task step's row keeps in its ``request`` column: everything needed to send it again.

    ``trace`` is the run's trace context (a W3C ``traceparent``), when the run has one; ``tick`` the tick of a
    scheduled run.
    """
    request = {"task": task, "args": args, "kwargs": kwargs, "options": options, "retry": retry}
    if trace:
        request["trace"] = trace
    if tick is not None:
        request["tick"] = tick
    return request


@dataclass(frozen=True, slots=True)
class AdvanceMessage:
    """Ask a coordinator to replay ``run_id``; ``outbox_id`` is the outbox row it consumes."""

    run_id: str
    outbox_id: int | None


@dataclass(frozen=True, slots=True)
class TimerMessage:
    """A timer handed to a timer transport (Kafka delay topics), which fires it at ``due_at``; ``outbox_id``
    is its outbox row, deleted once the transport confirms it."""

    timer_id: int
    run_id: str
    due_at: float
    outbox_id: int | None


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """A Celery task message of the user's own; ``id`` is its Celery task id, the same whenever it is re-sent.

    ``args``, ``kwargs`` and ``options`` (``queue``, ``countdown``, ...) are as the user gave them; ``outbox_id``
    is its outbox row once written.
    """

    id: str
    run_id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    outbox_id: int | None = None

    def to_payload(self) -> dict[str, Any]:
        """What its outbox row keeps (encoded with :func:`~durable_tasks.serialization.dumps`)."""
        return {"id": self.id, "task": self.task, "args": self.args, "kwargs": self.kwargs, "options": self.options}


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """A Kafka record of the user's own. ``value`` is bytes, text, or a JSON value (sent as JSON); the record
    carries ``id`` in its ``durable-message-id`` header and the run in ``durable-run``."""

    id: str
    run_id: str
    topic: str
    value: Any
    key: str | bytes | None = None
    outbox_id: int | None = None

    def to_payload(self) -> dict[str, Any]:
        """What its outbox row keeps (encoded with :func:`~durable_tasks.serialization.dumps`)."""
        return {"id": self.id, "topic": self.topic, "value": self.value, "key": self.key}


OwnMessage = TaskMessage | TopicMessage


def own_message(run_id: str, outbox_id: int, payload: Mapping[str, Any]) -> OwnMessage:
    """The message of an outbox row of the user's own, from its decoded payload."""
    if "topic" in payload:
        return TopicMessage(payload["id"], run_id, payload["topic"], payload["value"], payload.get("key"), outbox_id)
    return TaskMessage(payload["id"], run_id, payload["task"], list(payload["args"]), dict(payload["kwargs"]),
                       dict(payload.get("options") or {}), outbox_id)


Message = StepMessage | AdvanceMessage | TaskMessage | TimerMessage
"""What a :class:`~durable_tasks.outbox.Publisher` sends (a ``TopicMessage`` goes to Kafka through the run's topics;
a ``TimerMessage`` to the timer transport)."""
