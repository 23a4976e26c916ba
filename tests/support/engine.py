"""Driving the engine by hand in unit tests: deliver what a :class:`KeptMessages` publisher kept, as a broker and
a worker would (advances to the coordinator, step messages to the step wrapper)."""

from __future__ import annotations

from typing import Any

from durable_tasks import Durable
from durable_tasks.coordinator import advance
from durable_tasks.messages import AdvanceMessage, StepMessage
from durable_tasks.task_step import execute

from .publisher import KeptMessages


def deliver(durable: Durable, message: StepMessage) -> Any:
    """Run one step message through the step wrapper; a failed attempt's exception is returned, not raised
    (it is journaled; a worker would log it)."""
    task = durable.app.tasks[message.task]
    try:
        return execute(durable.runtime, task, message, lambda *args, **kwargs: task.run(*args, **kwargs))
    except Exception as exc:
        return exc


def pump(durable: Durable, broker: KeptMessages, *, hold: tuple[str, ...] = (), limit: int = 200) -> list[Any]:
    """Deliver every published message, and those they cause, until none is left; step messages of the tasks
    in ``hold`` are kept back (their steps stay dispatched) and returned."""
    held: list[Any] = []
    for _ in range(limit):
        if not broker.messages:
            return held
        message = broker.messages.pop(0)
        if isinstance(message, AdvanceMessage):
            advance(durable.runtime, message.run_id, consume=message.outbox_id)
        elif isinstance(message, StepMessage) and message.task in hold:
            held.append(message)
        else:
            deliver(durable, message)
    raise AssertionError("messages keep coming")
