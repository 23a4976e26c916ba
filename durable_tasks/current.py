"""Which durable step is running in this thread: run id, step key, attempt, idempotency key, its tick, and the
outbox of the messages it sends (``current_step().send_task`` / ``.publish``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import InvalidStateError

if TYPE_CHECKING:
    from .outgoing import OutgoingBuffer


@dataclass(frozen=True, slots=True)
class Tick:
    """The schedule tick a run was started for: ``ctx.tick`` in a workflow, ``current_step().tick`` in a task.

    ``scheduled_for`` is the tick's nominal instant and ``started_at`` when its run actually started (later
    after downtime, with jitter, or for a buffered tick), both aware UTC datetimes. They come from the run,
    not from its input, so every start of one tick has the same input and idempotency key::

        @durable.cron("0 9 * * MON", tz="Europe/Berlin")
        @durable.workflow
        def weekly_report(ctx):
            week = ctx.tick.scheduled_for.astimezone(ZoneInfo("Europe/Berlin")).date()
            ...
    """

    schedule: str
    """The schedule's name."""
    scheduled_for: datetime
    """The nominal tick (for ``durable cron trigger``: the moment of the trigger)."""
    started_at: datetime
    """When the tick's run was started."""

    @classmethod
    def of(cls, schedule: str, scheduled_for: float, started_at: float) -> Tick:
        """A tick from epoch seconds (as the journal stores them)."""
        return cls(schedule, datetime.fromtimestamp(scheduled_for, UTC), datetime.fromtimestamp(started_at, UTC))

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "scheduled_for": self.scheduled_for.timestamp(),
                "started_at": self.started_at.timestamp()}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Tick | None:
        if not value:
            return None
        return cls.of(value["schedule"], value["scheduled_for"], value["started_at"])


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Where the running code sits in a durable run; see :func:`current_step`.

    ``idempotency_key`` (``run_id:step_key``) stays the same across attempts: hand it to outside APIs,
    such as a payment provider's ``Idempotency-Key`` header, so that a retried step cannot charge twice.
    ``attempt_key`` (``run_id:step_key:attempt``) is unique to one attempt. ``tick`` is the schedule tick
    the run was started for (None for runs no schedule started).
    """

    run_id: str
    step_key: str
    position: int
    attempt: int
    _cancel_check: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)
    tick: Tick | None = None
    _outbox: OutgoingBuffer | None = field(default=None, repr=False, compare=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step_key}"

    @property
    def attempt_key(self) -> str:
        return f"{self.run_id}:{self.step_key}:{self.attempt}"

    def is_cancelled(self) -> bool:
        """True once an operator cancelled the run (``durable runs cancel``); long steps may stop early."""
        return self._cancel_check(self.run_id) if self._cancel_check else False

    def send_task(self, task: Any, *args: Any, **kwargs: Any) -> str:
        """Send a Celery task message with this step's result: it leaves after the result is journaled, in the
        same commit, and never for an attempt that fails or dies first.

        Returns the message id, ``run_id:step_key:n`` for the step's n-th message, which is the Celery task id:
        the same in every attempt, so a consumer can drop a duplicate. ``task`` is a task, a signature or a
        task name, with the arguments as ``ctx.run`` takes them::

            @durable.step
            @app.task
            def charge_card(order_id: int) -> dict:
                receipt = payments.charge(order_id, idempotency_key=current_step().idempotency_key)
                current_step().send_task(email_receipt, order_id, receipt["id"])  # leaves with the result
                return receipt
        """
        return self._buffer("send_task").send_task(task, args, kwargs)

    def publish(self, topic: str, value: Any, *, key: str | bytes | None = None) -> str:
        """Publish a Kafka record with this step's result (like :meth:`send_task`); needs the ``kafka_servers``
        setting. Returns its id (``run_id:step_key:n``), also in its ``durable-message-id`` header."""
        return self._buffer("publish").publish(topic, value, key)

    def _buffer(self, what: str) -> OutgoingBuffer:
        if self._outbox is None:
            raise InvalidStateError(f"current_step().{what}() works in steps that durable-tasks runs; this StepInfo "
                                    f"of step {self.step_key!r} was made by hand and has no outbox.")
        return self._outbox


_current: ContextVar[StepInfo | None] = ContextVar("durable_step", default=None)


def current_step() -> StepInfo | None:
    """The durable step running in this thread, or None outside durable runs (a plain ``.delay()``).

    Example::

        @durable.step
        @app.task
        def charge_card(order_id: int) -> dict:
            step = current_step()
            key = step.idempotency_key if step else f"order-{order_id}"
            return payments.charge(order_id, idempotency_key=key)
    """
    return _current.get()


@contextmanager
def running_step(info: StepInfo) -> Iterator[StepInfo]:
    token = _current.set(info)
    try:
        yield info
    finally:
        _current.reset(token)
