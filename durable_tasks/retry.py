"""Retry policies: how many attempts a step gets and how long to wait between them.

Waits are durable timers in the journal, never broker countdowns, so a six-hour backoff survives
restarts and Redis's visibility timeout.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .durations import parse_duration
from .errors import ConfigurationError, PayloadError

Backoff = Literal["fixed", "exponential"]
ExceptionKind = type[BaseException] | str
"""An exception class, or its qualified name (``"requests.exceptions.Timeout"``) as kept in the journal."""


@dataclass(frozen=True, init=False)
class RetryPolicy:
    """How a failing step is retried before its run is parked as ``failed``.

    Example::

        @durable.step(retry=RetryPolicy(max_attempts=5, backoff="exponential", initial="2s", maximum="10m",
                                        dont_retry=(ValueError,)))
        @app.task
        def charge_card(order_id: int) -> dict: ...

    ``max_attempts`` counts the first try; ``1`` means never retry. ``retry_on`` (when given) limits retries to
    those exception types; ``dont_retry`` types are never retried. ``jitter`` spreads each wait by up to
    that fraction (0.1 = plus or minus 10%). ``timeout`` limits one attempt (Celery's ``time_limit`` on
    task steps, a thread-free check after the call on inline steps). Durations take seconds or text
    (``"2s"``, ``"10m"``) and are kept as seconds.
    """

    max_attempts: int
    backoff: Backoff
    initial: float
    maximum: float
    multiplier: float
    jitter: float
    dont_retry: tuple[ExceptionKind, ...]
    retry_on: tuple[ExceptionKind, ...]
    timeout: float | None

    def __init__(self, max_attempts: int = 1, backoff: Backoff = "exponential", initial: float | str = 1.0,
                 maximum: float | str = 3600.0, multiplier: float = 2.0, jitter: float = 0.1,
                 dont_retry: Sequence[ExceptionKind] = (), retry_on: Sequence[ExceptionKind] = (),
                 timeout: float | str | None = None) -> None:
        if max_attempts < 1:
            raise ConfigurationError(f"RetryPolicy(max_attempts={max_attempts}): it must be at least 1.")
        if backoff not in ("fixed", "exponential"):
            raise ConfigurationError(f"RetryPolicy(backoff={backoff!r}): use 'fixed' or 'exponential'.")
        if not 0 <= jitter <= 1:
            raise ConfigurationError(f"RetryPolicy(jitter={jitter}): use a fraction from 0 to 1.")
        values = {
            "max_attempts": max_attempts, "backoff": backoff, "initial": parse_duration(initial),
            "maximum": parse_duration(maximum), "multiplier": float(multiplier), "jitter": float(jitter),
            "dont_retry": tuple(dont_retry), "retry_on": tuple(retry_on),
            "timeout": None if timeout is None else parse_duration(timeout),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed."""
        base = self.initial if self.backoff == "fixed" else self.initial * self.multiplier ** (failed_attempt - 1)
        base = min(base, self.maximum)
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread))

    def should_retry(self, failed_attempt: int, error: BaseException) -> bool:
        """True when attempt ``failed_attempt`` (1-based) failing with ``error`` earns another attempt."""
        if failed_attempt >= self.max_attempts or isinstance(error, NEVER_RETRIED):
            return False
        if self.retry_on and not _matches(error, self.retry_on):
            return False
        return not _matches(error, self.dont_retry)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts, "backoff": self.backoff, "initial": self.initial,
            "maximum": self.maximum, "multiplier": self.multiplier, "jitter": self.jitter,
            "dont_retry": [_type_name(kind) for kind in self.dont_retry],
            "retry_on": [_type_name(kind) for kind in self.retry_on], "timeout": self.timeout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RetryPolicy:
        """The policy :meth:`to_json` wrote (exception types come back as names); no data: never retry."""
        if not data:
            return NO_RETRY
        return cls(**data)


def _type_name(kind: ExceptionKind) -> str:
    return kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"


def _matches(error: BaseException, kinds: Sequence[ExceptionKind]) -> bool:
    """isinstance() for classes, and a match anywhere in the MRO for qualified names."""
    names = {kind for kind in kinds if isinstance(kind, str)}
    classes = tuple(kind for kind in kinds if not isinstance(kind, str))
    if classes and isinstance(error, classes):
        return True
    return bool(names) and any(_type_name(base) in names for base in type(error).__mro__)


NEVER_RETRIED: tuple[type[BaseException], ...] = (PayloadError,)
NO_RETRY = RetryPolicy()


def from_celery_options(task: Any) -> RetryPolicy | None:
    """Translate a task's ``autoretry_for``/``max_retries``/``retry_backoff`` into a policy, or None.

    Lets a user keep those Celery options on a task that becomes a durable step: durable runs then retry
    through the journal with the same limits instead of through new broker messages.
    """
    autoretry_for = tuple(getattr(task, "autoretry_for", ()) or ())
    if not autoretry_for:
        return None
    retry_kwargs = dict(getattr(task, "retry_kwargs", None) or {})
    max_retries = retry_kwargs.get("max_retries", getattr(task, "max_retries", 3))
    retry_backoff = getattr(task, "retry_backoff", False)
    fixed_delay = float(retry_kwargs.get("countdown", getattr(task, "default_retry_delay", 180)))
    return RetryPolicy(
        max_attempts=1_000_000 if max_retries is None else max_retries + 1,
        backoff="exponential" if retry_backoff else "fixed",
        initial=float(retry_backoff) if retry_backoff else fixed_delay,
        maximum=float(getattr(task, "retry_backoff_max", 600)) if retry_backoff else fixed_delay,
        jitter=0.5 if retry_backoff and getattr(task, "retry_jitter", True) else 0.0,
        retry_on=autoretry_for,
        dont_retry=tuple(getattr(task, "dont_autoretry_for", ()) or ()),
    )
