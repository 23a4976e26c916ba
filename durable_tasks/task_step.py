"""``@durable.step``: an existing Celery task that journals its result when it runs as a durable step.

The decorator replaces the task's ``run`` with a wrapper. A message without the ``durable`` header (a plain
``.delay()``) runs the task exactly as before, Celery's own ``autoretry_for`` included. A
:class:`~durable_tasks.messages.StepMessage` sent for a durable run carries the step's address in that
header; the wrapper then

1. claims the dispatched step (``dispatched`` to ``running``, one autocommit write); a duplicate delivery
   of a finished step returns the journaled result without running the body (I1);
2. runs the body with :func:`~durable_tasks.current_step` set (the messages it sends with
   ``current_step().send_task`` / ``.publish`` wait in an :class:`~durable_tasks.outgoing.OutgoingBuffer`);
3. in one more commit, journals the result with those messages (or the failed attempt and what follows it,
   without them) and advances the run right here, so the next step's message leaves without an extra
   broker hop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from celery.exceptions import Ignore, Retry

from . import coordinator, transitions
from .attempts import CeleryRetry
from .current import StepInfo, Tick, running_step
from .errors import StoreUnavailableError
from .messages import HEADER, OwnMessage, StepMessage
from .outgoing import OutgoingBuffer
from .records import StepRow, WrittenStep
from .registry import STEP_ATTRIBUTE, StepDefinition, step_definition
from .retry import RetryPolicy, from_celery_options
from .runtime import Runtime
from .serialization import dumps, loads
from .store import queries
from .vocabulary import StepKind, StepStatus

logger = logging.getLogger("durable_tasks.step")


class RetryRequested(Exception):
    """The body called ``self.retry()`` inside a durable run; becomes a journaled retry."""

    def __init__(self, exc: BaseException | None, countdown: float | None, max_retries: int | None) -> None:
        super().__init__(str(exc) if exc else "retry requested")
        self.exc = exc
        self.countdown = countdown
        self.max_retries = max_retries


def make_step(runtime: Runtime, task: Any, retry: RetryPolicy | None) -> Any:
    """Wrap ``task`` (a Celery task) in place and return it."""
    task = getattr(task, "_get_current_object", lambda: task)()  # a lazy @app.task proxy
    existing = step_definition(task)
    if existing is not None:
        setattr(task, STEP_ATTRIBUTE, StepDefinition(retry or existing.retry))
        return task
    body = getattr(task, "_orig_run", None) or task.run  # skip Celery's autoretry wrapper in durable runs
    plain_run = task.run
    plain_retry = task.retry

    def run(*args: Any, **kwargs: Any) -> Any:
        header = getattr(task.request, HEADER, None)
        if not header:
            return plain_run(*args, **kwargs)
        message = StepMessage.from_headers(header, task=task.name, task_id=task.request.id, args=list(args),
                                           kwargs=kwargs)
        return execute(runtime, task, message, body)

    def retry_in_step(*args: Any, exc: BaseException | None = None, countdown: float | None = None,
                      max_retries: int | None = None, **options: Any) -> Any:
        if getattr(task.request, HEADER, None):
            raise RetryRequested(exc, countdown, max_retries)
        return plain_retry(*args, exc=exc, countdown=countdown, max_retries=max_retries, **options)

    run.__doc__ = getattr(plain_run, "__doc__", None)
    task.run = run
    task.retry = retry_in_step
    setattr(task, STEP_ATTRIBUTE, StepDefinition(retry or from_celery_options(task)))
    return task


def execute(runtime: Runtime, task: Any, message: StepMessage, body: Callable[..., Any]) -> Any:
    """Run one delivery of a durable step message (see the module docstring)."""
    worker = runtime.identity.start()
    started = time.time()

    def claim() -> StepRow | bool | None:
        with runtime.unit_of_work(autocommit=True) as uow:
            if transitions.claim_task(uow, message, worker, started):
                return None
            return queries.get_step(uow.conn, message.run_id, message.position) or False

    existing = _with_store_retries(claim, runtime.settings.worker_timeout)
    if existing is not None:
        return _duplicate(existing, message)

    outbox = OutgoingBuffer(message.run_id, message.step_key, max_bytes=runtime.settings.max_payload_bytes,
                            topics=runtime.topics)
    info = StepInfo(message.run_id, message.step_key, message.position, message.attempt, runtime.is_cancelled,
                    tick=Tick.from_json(message.tick), _outbox=outbox)
    try:
        with runtime.tracing.step_attempt(message.trace, run_id=message.run_id, step_key=message.step_key,
                                          attempt=message.attempt, kind=StepKind.TASK, task=message.task,
                                          task_id=message.task_id), running_step(info):
            value = body(*message.args, **message.kwargs)
        text = dumps(value, what=f"result of step {message.step_key!r} in run {message.run_id}",
                     max_bytes=runtime.settings.max_payload_bytes)
    except RetryRequested as request:
        celery_retry = CeleryRetry(
            max_retries=request.max_retries if request.max_retries is not None else task.max_retries,
            countdown=request.countdown if request.countdown is not None else float(task.default_retry_delay or 0))
        _journal(runtime, partial(_record_failure, runtime, message, request.exc or request, started, celery_retry))
        raise Retry(exc=request.exc, when=request.countdown) from request.exc
    except Exception as exc:
        _journal(runtime, partial(_record_failure, runtime, message, exc, started, None))
        raise
    _journal(runtime, partial(_record_success, runtime, message, text, started, outbox.messages))
    return value


def _duplicate(existing: StepRow | bool, message: StepMessage) -> Any:
    if not isinstance(existing, bool) and existing.status == StepStatus.SUCCEEDED:
        logger.info("Step %r of run %s already journaled; duplicate delivery skipped (body not run).",
                    message.step_key, message.run_id)
        return loads(existing.result)
    state = "missing" if isinstance(existing, bool) else f"{existing.status} (attempt {existing.attempt})"
    logger.info("Step %r attempt %d of run %s is %s; this delivery is stale and was skipped.",
                message.step_key, message.attempt, message.run_id, state)
    raise Ignore()


def _record_success(runtime: Runtime, message: StepMessage, text: str, started: float,
                    sent: list[tuple[OwnMessage, str]]) -> None:
    with runtime.unit_of_work() as uow:
        if not coordinator.finish_and_advance(runtime, uow, _address(message), message.attempt, text,
                                              started_at=started, messages=sent):
            logger.info("Step %r of run %s was journaled by another delivery; this result is dropped.",
                        message.step_key, message.run_id)


def _address(message: StepMessage) -> StepRow:
    """The step as far as its message knows it: a success needs no read of the step's row."""
    return WrittenStep(message.run_id, message.position, message.step_key, StepKind.TASK, message.task,
                       StepStatus.RUNNING, message.attempt)


def _record_failure(runtime: Runtime, message: StepMessage, exc: BaseException, started: float,
                    celery_retry: CeleryRetry | None) -> None:
    with runtime.unit_of_work() as uow:
        step = queries.get_step(uow.conn, message.run_id, message.position)
        if step is None:
            return  # the run was pruned meanwhile
        policy = RetryPolicy.from_json(message.retry)
        status = transitions.attempt_failed(uow, step, message.attempt, exc, policy=policy,
                                            worker=runtime.identity.worker_id, started_at=started,
                                            celery_retry=celery_retry)
        if status == StepStatus.FAILED:
            coordinator.advance(runtime, message.run_id, uow=uow)


def _journal(runtime: Runtime, write: Callable[[], None]) -> None:
    """Journal an outcome, retrying while the database is unreachable (a restart takes seconds)."""
    try:
        _with_store_retries(write, max(60.0, runtime.settings.worker_timeout * 2))
    except StoreUnavailableError:
        # The outcome cannot be journaled: give up our identity so the sweeper re-dispatches the step.
        runtime.identity.rotate()
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
