"""Journaled state changes of steps shared by the coordinator, the step wrapper, timers and operators.

Each function runs inside a :class:`~durable_tasks.outbox.UnitOfWork` transaction, so a change and the
messages it causes commit together (I2).
"""

from __future__ import annotations

import json
import time
import traceback as tb
from dataclasses import dataclass
from itertools import takewhile
from typing import Any
from uuid import uuid4

from .errors import WorkerLostError
from .outbox import UnitOfWork, dispatch_message
from .retry import RetryPolicy
from .store import queries
from .store.queries import ADVANCE
from .store.schema import STEP_DISPATCHED, STEP_FAILED, STEP_RETRYING, STEP_SUCCEEDED

LOST = "lost"
WORKER_LOST = f"{WorkerLostError.__module__}.{WorkerLostError.__qualname__}"


@dataclass(frozen=True, slots=True)
class StepRow:
    """A journal row written in this transaction, shaped like a row loaded from ``durable_steps``."""

    run_id: str
    position: int
    step_key: str
    kind: str
    name: str
    status: str
    attempt: int = 1
    request: str | None = None
    result: str | None = None
    error: str | None = None


def error_record(exc: BaseException, *, step_key: str | None = None, attempt: int | None = None,
                 with_traceback: bool = True) -> dict[str, Any]:
    """The JSON form of an exception kept in the journal (it ran in another process)."""
    record: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
    }
    if step_key is not None:
        record["step"] = step_key
    if attempt is not None:
        record["attempt"] = attempt
    if with_traceback:
        record["traceback"] = "".join(tb.format_exception(exc))[-8000:]
    return record


def send_dispatch(uow: UnitOfWork, run_id: str, position: int, step_key: str, attempt: int,
                  request: dict[str, Any]) -> dict[str, Any]:
    """Queue the Celery message of a task step's attempt; returns the step columns that make it durable.

    The caller writes those columns in the same transaction: the dispatched step row is the message's
    outbox record (see :mod:`durable_tasks.outbox`).
    """
    task_id = str(uuid4())
    uow.publish_after_commit(dispatch_message(run_id, position, step_key, attempt, task_id, request))
    return {"status": STEP_DISPATCHED, "attempt": attempt, "celery_task_id": task_id,
            "publish_after": time.time() + uow.redelivery_after, "publish_count": 0}


def send_advance(uow: UnitOfWork, run_id: str) -> None:
    """Ask a coordinator to replay the run (used when the change happens outside a replay)."""
    uow.send(run_id, ADVANCE, {})


def redispatch(uow: UnitOfWork, step: Any, attempt: int) -> None:
    """Send a task step again as attempt ``attempt`` (after a retry wait, a lost worker, or a resume)."""
    columns = send_dispatch(uow, step.run_id, step.position, step.step_key, attempt, json.loads(step.request))
    queries.update_step(uow.conn, step.run_id, step.position, worker=None, started_at=None, finished_at=None,
                        **columns)


def record_attempt(uow: UnitOfWork, step: Any, attempt: int, *, status: str, worker: str | None,
                   started_at: float | None, error: dict[str, Any] | None = None) -> None:
    now = time.time()
    queries.insert_attempt(
        uow.conn, run_id=step.run_id, position=step.position, attempt=attempt, status=status,
        error_type=error.get("type") if error else None,
        error_message=error.get("message") if error else None,
        traceback=error.get("traceback") if error else None,
        worker=worker, started_at=started_at, duration=None if started_at is None else now - started_at,
    )


def fail_or_retry(uow: UnitOfWork, step: Any, attempt: int, error: dict[str, Any], *, retry: bool,
                  delay: float) -> str:
    """After a failed attempt: wait ``delay`` on a durable timer for the next one, or fail the step.

    Returns the step's new status. A failed step makes the workflow raise ``StepFailedError`` at its next
    replay, which parks the run as ``failed`` unless the workflow handles it.
    """
    now = time.time()
    error_text = json.dumps(error, separators=(",", ":"))
    if retry:
        queries.update_step(uow.conn, step.run_id, step.position, status=STEP_RETRYING, error=error_text)
        queries.insert_timer(uow.conn, step.run_id, step.position, "retry", now + delay)
        return STEP_RETRYING
    queries.update_step(uow.conn, step.run_id, step.position, status=STEP_FAILED, error=error_text,
                        finished_at=now)
    return STEP_FAILED


def lost_attempt(uow: UnitOfWork, step: Any, max_lost_attempts: int) -> StepRow | None:
    """Journal that ``step``'s running attempt died with its worker.

    Returns the failed step when that makes ``max_lost_attempts`` losses in a row (a step that kills its
    worker must not loop forever), else None and the caller starts the next attempt.
    """
    error = {"type": WORKER_LOST, "step": step.step_key, "attempt": step.attempt,
             "message": f"worker {step.worker} stopped heartbeating while it ran attempt {step.attempt} "
                        f"of step {step.step_key!r}"}
    record_attempt(uow, step, step.attempt, status=LOST, worker=step.worker, started_at=step.started_at,
                   error=error)
    recent = queries.recent_attempt_statuses(uow.conn, step.run_id, step.position, max_lost_attempts)
    lost = len(list(takewhile(lambda status: status == LOST, recent)))
    if lost < max_lost_attempts:
        return None
    error["message"] += (f"; lost {lost} times in a row (max_lost_attempts={max_lost_attempts}), so the run "
                         f"is parked: find out why the step kills its worker, then `durable runs resume "
                         f"{step.run_id}`")
    fail_or_retry(uow, step, step.attempt, error, retry=False, delay=0)
    return StepRow(step.run_id, step.position, step.step_key, step.kind, step.name, STEP_FAILED, step.attempt,
                   error=json.dumps(error))


def policy_decision(uow: UnitOfWork, policy: RetryPolicy, step: Any, exc: BaseException) -> tuple[bool, float]:
    """(retry?, seconds to wait) after a failed attempt of ``step``, whose attempt row is already written.

    The budget counts the attempts since the operator's last resume, so a resumed step gets a fresh one.
    """
    used = queries.attempts_since_resume(uow.conn, step.run_id, step.position)
    if policy.should_retry(used, exc):
        return True, policy.delay(used)
    return False, 0.0


def succeed_step(uow: UnitOfWork, run_id: str, position: int, result_text: str) -> None:
    queries.update_step(uow.conn, run_id, position, status=STEP_SUCCEEDED, result=result_text,
                        error=None, finished_at=time.time())
