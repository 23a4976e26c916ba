"""``@durable.step``: an existing Celery task that journals its result when it runs as a durable step.

The decorator replaces the task's ``run`` with a wrapper. A message without durable headers (a plain
``.delay()``) runs the task exactly as before, Celery's own ``autoretry_for`` included. A message sent by
the coordinator carries ``{"run", "position", "attempt", "outbox", ...}`` in its ``durable`` header; the
wrapper then

1. claims the step in one commit (and consumes its outbox row); a duplicate delivery of a finished step
   returns the journaled result without running the body (I1);
2. runs the body with :func:`~durable_tasks.current_step` set;
3. in one more commit, journals the result (or the failed attempt and the retry decision) and advances
   the run right here, so the next step's message leaves without an extra broker hop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore, Retry

from . import coordinator
from .current import StepInfo, running_step
from .errors import StoreUnavailableError
from .retry import RetryPolicy, from_celery_options
from .serialization import dumps, loads
from .store import queries
from .store.schema import STEP_FAILED, STEP_RUNNING, STEP_SUCCEEDED
from .transitions import StepRow, error_record, fail_or_retry, policy_decision, record_attempt
from .workflow import TASK

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger("durable_tasks.step")


@dataclass(frozen=True)
class StepDefinition:
    """What ``@durable.step`` attached to a task (``task.__durable_step__``)."""

    retry: RetryPolicy | None


class RetryRequested(Exception):
    def __init__(self, exc: BaseException | None, countdown: float | None, max_retries: int | None) -> None:
        super().__init__(str(exc) if exc else "retry requested")
        self.exc = exc
        self.countdown = countdown
        self.max_retries = max_retries


def make_step(durable: Durable, task: Any, retry: RetryPolicy | None) -> Any:
    """Wrap ``task`` (a Celery task) in place and return it."""
    task = getattr(task, "_get_current_object", lambda: task)()  # a lazy @app.task proxy
    if getattr(task, "__durable_step__", None) is not None:
        task.__durable_step__ = StepDefinition(retry or task.__durable_step__.retry)
        return task
    body = getattr(task, "_orig_run", None) or task.run  # skip Celery's autoretry wrapper in durable runs
    plain_run = task.run
    plain_retry = task.retry

    def run(*args: Any, **kwargs: Any) -> Any:
        headers = getattr(task.request, "durable", None)
        if not headers:
            return plain_run(*args, **kwargs)
        return execute(durable, task, headers, body, args, kwargs)

    def retry_in_step(*args: Any, exc: BaseException | None = None, countdown: float | None = None,
                      max_retries: int | None = None, **options: Any) -> Any:
        if getattr(task.request, "durable", None):
            raise RetryRequested(exc, countdown, max_retries)
        return plain_retry(*args, exc=exc, countdown=countdown, max_retries=max_retries, **options)

    run.__doc__ = getattr(plain_run, "__doc__", None)
    task.run = run
    task.retry = retry_in_step
    task.__durable_step__ = StepDefinition(retry or from_celery_options(task))
    return task


def execute(durable: Durable, task: Any, headers: dict[str, Any], body: Callable[..., Any],
            args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run one delivery of a durable step message (see the module docstring)."""
    run_id: str = headers["run"]
    position: int = headers["position"]
    attempt: int = headers["attempt"]
    step_key: str = headers["step_key"]
    worker = durable.identity.worker_id
    started = time.time()

    def claim() -> Any:
        with durable.store.advisory() as conn:
            claimed = queries.claim_step(conn, run_id, position, attempt, worker, started)
            if headers.get("outbox") is not None:
                queries.consume_outbox(conn, headers["outbox"])
            return None if claimed else (queries.get_step(conn, run_id, position) or False)

    existing = _with_store_retries(claim, durable.settings.worker_timeout)
    if existing is not None:
        return _duplicate(existing, run_id, step_key, attempt)

    info = StepInfo(run_id, step_key, position, attempt, durable.is_cancelled)
    try:
        with running_step(info):
            value = body(*args, **kwargs)
        text = dumps(value, what=f"result of step {step_key!r} in run {run_id}",
                     max_bytes=durable.settings.max_payload_bytes)
    except RetryRequested as request:
        _journal(durable, partial(_record_failure, durable, task, headers, request.exc or request, started, request))
        raise Retry(exc=request.exc, when=request.countdown) from request.exc
    except Exception as exc:
        _journal(durable, partial(_record_failure, durable, task, headers, exc, started, None))
        raise
    _journal(durable, partial(_record_success, durable, headers, text, started))
    return value


def _duplicate(existing: Any, run_id: str, step_key: str, attempt: int) -> Any:
    if existing is not False and existing.status == STEP_SUCCEEDED:
        logger.info("Step %r of run %s already journaled; duplicate delivery skipped (body not run).",
                    step_key, run_id)
        return loads(existing.result)
    state = "missing" if existing is False else f"{existing.status} (attempt {existing.attempt})"
    logger.info("Step %r attempt %d of run %s is %s; this delivery is stale and was skipped.",
                step_key, attempt, run_id, state)
    raise Ignore()


def _record_success(durable: Durable, headers: dict[str, Any], text: str, started: float) -> None:
    run_id, position = headers["run"], headers["position"]
    with durable.unit_of_work() as uow:
        if not queries.finish_step(uow.conn, run_id, position, status=STEP_SUCCEEDED, result=text,
                                   finished_at=time.time()):
            logger.info("Step %r of run %s was journaled by another delivery; this result is dropped.",
                        headers["step_key"], run_id)
            return
        if headers["attempt"] > 1:  # a first-try success is fully described by the step row itself
            step = StepRow(run_id, position, headers["step_key"], TASK, "", STEP_SUCCEEDED)
            record_attempt(uow, step, headers["attempt"], status=STEP_SUCCEEDED,
                           worker=durable.identity.worker_id, started_at=started)
        coordinator.advance(durable, run_id, uow=uow)


def _record_failure(durable: Durable, task: Any, headers: dict[str, Any], exc: BaseException, started: float,
                    request: RetryRequested | None) -> None:
    run_id, position, attempt = headers["run"], headers["position"], headers["attempt"]
    with durable.unit_of_work() as uow:
        step = queries.get_step(uow.conn, run_id, position)
        if step is None:
            return  # the run was pruned meanwhile
        error = error_record(exc, step_key=headers["step_key"], attempt=attempt)
        record_attempt(uow, step, attempt, status=STEP_FAILED, worker=durable.identity.worker_id,
                       started_at=started, error=error)
        if step.attempt != attempt or step.status != STEP_RUNNING:
            return  # a stale attempt (the step was re-dispatched meanwhile): only the attempt row is kept
        if request is None:
            retry, delay = policy_decision(uow, RetryPolicy.from_json(headers.get("retry")), step, exc)
        else:  # task.retry() called in the body: Celery's own limits, waited out on a durable timer
            limit = request.max_retries if request.max_retries is not None else task.max_retries
            retry = limit is None or queries.attempts_since_resume(uow.conn, run_id, position) <= limit
            delay = request.countdown if request.countdown is not None else float(task.default_retry_delay or 0)
        status = fail_or_retry(uow, step, attempt, error, retry=retry, delay=delay)
        logger.info("Step %r of run %s failed on attempt %d (%s: %s); %s.", headers["step_key"], run_id, attempt,
                    type(exc).__name__, exc, f"next attempt in {delay:.1f}s" if retry else "run parked")
        if status == STEP_FAILED:
            coordinator.advance(durable, run_id, uow=uow)


def _journal(durable: Durable, write: Callable[[], None]) -> None:
    """Journal an outcome, retrying while the database is unreachable (a restart takes seconds)."""
    try:
        _with_store_retries(write, max(60.0, durable.settings.worker_timeout * 2))
    except StoreUnavailableError:
        # The outcome cannot be journaled: give up our identity so the sweeper re-dispatches the step.
        durable.identity.rotate()
        raise


def _with_store_retries(action: Callable[[], Any], deadline_seconds: float) -> Any:
    deadline = time.monotonic() + deadline_seconds
    delay = 0.1
    while True:
        try:
            return action()
        except StoreUnavailableError as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("Durable store unavailable (%s); retrying in %.1fs.", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
