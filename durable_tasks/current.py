"""Which durable step is running in this thread: run id, step key, attempt and idempotency key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Where the running code sits in a durable run; see :func:`current_step`.

    ``idempotency_key`` (``run_id:step_key``) stays the same across attempts: hand it to outside APIs,
    such as a payment provider's ``Idempotency-Key`` header, so that a retried step cannot charge twice.
    ``attempt_key`` (``run_id:step_key:attempt``) is unique to one attempt.
    """

    run_id: str
    step_key: str
    position: int
    attempt: int
    _cancel_check: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step_key}"

    @property
    def attempt_key(self) -> str:
        return f"{self.run_id}:{self.step_key}:{self.attempt}"

    def is_cancelled(self) -> bool:
        """True once an operator cancelled the run (``durable runs cancel``); long steps may stop early."""
        return self._cancel_check(self.run_id) if self._cancel_check else False


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
