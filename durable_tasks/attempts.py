"""What follows a failed attempt, decided in one place for inline steps, task steps and the eager runner.

:func:`after_failure` applies the step's :class:`~durable_tasks.RetryPolicy` (or, when the task body
called Celery's ``self.retry()``, Celery's own limits) to the attempts used since the operator's last
resume, and says whether another attempt follows and after how long. The caller journals the decision
(:func:`durable_tasks.transitions.attempt_failed`) or, in the eager runner, acts on it at once.
"""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass
from typing import Any

from .retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class CeleryRetry:
    """The body called ``self.retry()``: Celery's limits for this task, waited out on a durable timer."""

    max_retries: int | None
    countdown: float


@dataclass(frozen=True, slots=True)
class NextAttempt:
    """Whether a failed step gets another attempt, and after how many seconds."""

    retry: bool
    delay: float = 0.0


GIVE_UP = NextAttempt(False)


def after_failure(policy: RetryPolicy, attempts_used: int, exc: BaseException,
                  celery_retry: CeleryRetry | None = None) -> NextAttempt:
    """Decide what follows a failed attempt; ``attempts_used`` counts it (1 after a failed first try).

    ``celery_retry`` replaces the policy when the body asked for a retry itself::

        after_failure(RetryPolicy(max_attempts=3), 1, TimeoutError())  # NextAttempt(retry=True, delay=~1.0)
    """
    if celery_retry is not None:
        limit = celery_retry.max_retries
        if limit is None or attempts_used <= limit:
            return NextAttempt(True, celery_retry.countdown)
        return GIVE_UP
    if policy.should_retry(attempts_used, exc):
        return NextAttempt(True, policy.delay(attempts_used))
    return GIVE_UP


def error_record(exc: BaseException, *, step_key: str | None = None, attempt: int | None = None,
                 with_traceback: bool = True) -> dict[str, Any]:
    """The JSON form of an exception kept in the journal (it may have run in another process)."""
    record: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": _storable(str(exc)),
    }
    if step_key is not None:
        record["step"] = step_key
    if attempt is not None:
        record["attempt"] = attempt
    if with_traceback:
        record["traceback"] = _storable("".join(tb.format_exception(exc))[-8000:])
    return record


def _storable(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes) escaped, so a database can store it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
