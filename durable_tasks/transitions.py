"""Every change of a run's or a step's state: the one module that writes them.

Each function runs inside a :class:`~durable_tasks.outbox.UnitOfWork` transaction, so a change and the
messages it causes commit together (I2), and notes a :class:`~durable_tasks.observe.Transition` that the
observers (events, metrics, traces) receive after the commit. A transition that changes a step which had
already succeeded or failed must bump the run's ``wake_seq`` (``queries.wake``), as :func:`restart_step`
does: coordinators keep journals between advances and re-read only unfinished and newer steps
(:mod:`durable_tasks.journal`). The coordinator, the step wrapper, the
timers, the sweeper and the operators call these functions and never write run or step rows themselves
(a test checks it).

Runs: :func:`create_run`, :func:`settle_run`, :func:`reopen_run`, :func:`cancel_run`, :func:`fork_run`.
Steps: :func:`dispatch_task`, :func:`refuse_task`, :func:`claim_task`, :func:`start_inline`,
:func:`attempt_succeeded` (and :func:`attempt_succeeded_locking_run`), :func:`attempt_failed`,
:func:`attempt_lost`, :func:`next_attempt`, :func:`restart_step`, :func:`start_sleep`, :func:`fire_timer`,
:func:`record_marker`, :func:`record_message`.
Child runs: :func:`start_child`; a finishing child settles its parent's step in :func:`settle_run` and
:func:`cancel_run`.
Announcements (nothing written, see :func:`announce_run`): :func:`announce_run`.
Events: :func:`start_wait`, :func:`deliver_event`, :func:`keep_event`, :func:`forget_expired_events`.

Lock order between runs: a child's row before its parent's, never the reverse. The transaction that finishes
a child (its coordinator's or a cancel's) holds the child's row, then locks the parent's to settle the
``child`` step. A parent's advance only inserts its children (new rows nobody else can hold), and a parent's
cancel locks the parent alone and asks each active child to cancel itself (an ``advance`` outbox row carrying
the request). No transaction holds a parent while it waits for a child, so a family cannot deadlock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import takewhile
from typing import Any
from uuid import uuid4

from .attempts import CeleryRetry, after_failure, error_record
from .children import after_child_failure, cancel_request, child_failure, child_run_id
from .durations import describe
from .errors import EventTimeoutError, WorkerLostError
from .messages import OwnMessage, StepMessage, TaskMessage
from .observe import Transition
from .outbox import UnitOfWork
from .records import LockedRun, RunRow, StepRow, TimerRow, WrittenStep
from .retry import RetryPolicy
from .serialization import loads
from .store import event_queries, queries
from .vocabulary import (
    ACTIVE_RUN_STATUSES,
    AttemptStatus,
    RunStatus,
    StepKind,
    StepStatus,
    TimerPurpose,
)

logger = logging.getLogger("durable_tasks.transitions")

WORKER_LOST = f"{WorkerLostError.__module__}.{WorkerLostError.__qualname__}"
EVENT_TIMEOUT = f"{EventTimeoutError.__module__}.{EventTimeoutError.__qualname__}"


def _compact(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def _note_step(uow: UnitOfWork, step: StepRow | WrittenStep, status: str, attempt: int | None = None,
               **detail: Any) -> None:
    uow.note(Transition("step", step.run_id, status, time.time(), step.position, step.step_key, step.kind,
                        attempt if attempt is not None else step.attempt, detail))


# --- runs --------------------------------------------------------------------------------------------


def create_run(uow: UnitOfWork, *, run_id: str, workflow: str, input: str, fingerprint: str,
               idempotency_key: str | None = None, label: str | None = None, forked_from: str | None = None,
               schedule: str | None = None, scheduled_for: float | None = None, parent_id: str | None = None,
               parent_position: int | None = None) -> None:
    """A new ``pending`` run; the caller asks for its first advance (or advances it in this transaction).

    ``label`` is what operators see instead of the workflow's name; ``forked_from`` the run a fork copies;
    ``schedule`` and ``scheduled_for`` name the schedule and nominal tick that started it (``ctx.tick``);
    ``parent_id`` and ``parent_position`` the run and ``child`` step that started it (:func:`start_child`).
    """
    now = time.time()
    extra: dict[str, Any] = {"schedule": schedule, "scheduled_for": scheduled_for} if schedule is not None else {}
    if parent_id is not None:
        extra.update(parent_id=parent_id, parent_position=parent_position)
    detail: dict[str, Any] = {"workflow": workflow, **extra}
    queries.insert_run(uow.conn, id=run_id, workflow=workflow, status=RunStatus.PENDING, input=input,
                       idempotency_key=idempotency_key, fingerprint=fingerprint, label=label, forked_from=forked_from,
                       created_at=now, updated_at=now, **extra)
    uow.note(Transition("run", run_id, RunStatus.PENDING, now, detail=detail))


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a replay decided for the run: its status and, once finished, its result or error."""

    status: RunStatus
    result: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)


def settle_run(uow: UnitOfWork, run: LockedRun, outcome: RunOutcome, *, lease_owner: str | None = None,
               wake_seq: int = 0) -> bool:
    """Write what a replay of the (locked) ``run`` decided, giving back its lease if ``lease_owner`` holds it.

    Returns False when the run was woken meanwhile (``wake_seq`` moved): nothing is written and the lease
    holder replays once more. Without a lease the row is written only when something changed.
    """
    now = time.time()
    values: dict[str, Any] = {"status": outcome.status, "updated_at": now}
    if outcome.finished:
        values.update(result=outcome.result, error=outcome.error, finished_at=now)
    if lease_owner is not None:
        if not queries.release_run(uow.conn, run.id, lease_owner, wake_seq, **values):
            return False
    elif outcome.status != run.status or outcome.finished or run.lease_owner is not None:
        queries.update_run(uow.conn, run.id, lease_owner=None, lease_until=None, **values)
    if outcome.status != run.status or outcome.finished:
        # What observers need to show the run (events, metrics, traces) without reading it again.
        detail = {"workflow": run.workflow, "previous": run.status, "created_at": run.created_at,
                  "input": run.input}
        if outcome.result is not None:
            detail["result"] = outcome.result
        if outcome.error is not None:
            detail["error"] = outcome.error
        uow.note(Transition("run", run.id, outcome.status, now, detail=detail))
    if outcome.finished:
        _settle_parent_step(uow, run, outcome.status, outcome.result, outcome.error)
    return True


def reopen_run(uow: UnitOfWork, run: RunRow, *, restart: Iterable[StepRow] = ()) -> None:
    """A failed run goes on (``durable runs resume`` / ``retry-step``): ``restart`` steps get a new attempt."""
    for step in restart:
        restart_step(uow, step)
    now = time.time()
    queries.update_run(uow.conn, run.id, status=RunStatus.RUNNING, error=None, result=None, finished_at=None,
                       updated_at=now)
    uow.note(Transition("run", run.id, RunStatus.RUNNING, now, detail={"workflow": run.workflow,
                                                                       "previous": run.status, "resumed": True}))
    uow.send_advance(run.id, announce={"announced": ANNOUNCE_RESUMED})


def cancel_run(uow: UnitOfWork, run: LockedRun, reason: str, *, terminate: bool = False) -> None:
    """Cancel a run: its timers, queued advances, pending steps and children end; running steps can notice.

    ``terminate`` also journals its running task steps ``cancelled``, which their workers act on
    (:mod:`durable_tasks.termination`); children get the same request (see the lock order above).
    """
    now = time.time()
    queries.cancel_timers(uow.conn, run.id, None, now)
    event_queries.delete_waits(uow.conn, run.id)
    queries.delete_outbox_of(uow.conn, run.id)
    queries.cancel_pending_steps(uow.conn, run.id, (StepStatus.DISPATCHED, StepStatus.RETRYING,
                                                    StepStatus.SLEEPING, StepStatus.WAITING), StepStatus.CANCELLED, now)
    error = _compact({"type": "cancelled", "message": reason, **({"terminate": True} if terminate else {})})
    stopped = (StepKind.CHILD, StepKind.TASK) if terminate else (StepKind.CHILD,)
    for step in queries.load_journal(uow.conn, run.id).values():
        if step.status == StepStatus.RUNNING and step.kind in stopped:
            queries.update_step(uow.conn, run.id, step.position, status=StepStatus.CANCELLED, error=error,
                                finished_at=now)
            _note_step(uow, step, StepStatus.CANCELLED, error=error, terminate=step.kind == StepKind.TASK)
    for child in queries.children_of(uow.conn, run.id, active_only=True):
        uow.send_advance(child.id, cancel=cancel_request(run.id, loads(error)))
    queries.update_run(uow.conn, run.id, status=RunStatus.CANCELLED, lease_owner=None, lease_until=None,
                       error=error, finished_at=now, updated_at=now)
    uow.note(Transition("run", run.id, RunStatus.CANCELLED, now, detail={"workflow": run.workflow,
                                                                         "previous": run.status, "error": error}))
    uow.send_advance(run.id, announce={"announced": ANNOUNCE_CANCELLED, "error": error})  # see announce_run
    _settle_parent_step(uow, run, RunStatus.CANCELLED, None, error)


ANNOUNCE_RESUMED = "resumed"
ANNOUNCE_CANCELLED = "cancelled"


def announce_run(uow: UnitOfWork, run: LockedRun, announcement: Mapping[str, Any]) -> None:
    """Repeat, in the worker that consumes its advance, an operator's change made in another process.

    Monitoring events are sent only by workers (a client that sent task events would show in Flower as a
    worker), so a resume or a cancel made by ``durable runs ...`` or a web process reaches Flower when a
    worker consumes the advance it asked for. Nothing is written: the transition is noted with
    ``announced`` in its detail, so counters (which counted the change where it happened) skip it.
    """
    detail: dict[str, Any] = {"workflow": run.workflow, "created_at": run.created_at, "input": run.input,
                              **announcement}
    if announcement.get("announced") == ANNOUNCE_RESUMED:
        detail["previous"] = RunStatus.FAILED
    uow.note(Transition("run", run.id, run.status, time.time(), detail=detail))


def fork_run(uow: UnitOfWork, run: RunRow, before_position: int, fingerprint: str) -> str:
    """A new run of ``run``'s workflow and input whose journal starts with copies of the steps before
    ``before_position``; returns its id."""
    new_id = str(uuid4())
    create_run(uow, run_id=new_id, workflow=run.workflow, input=run.input, fingerprint=fingerprint, label=run.label,
               forked_from=run.id)
    queries.copy_steps(uow.conn, run.id, new_id, before_position)
    uow.send_advance(new_id)
    return new_id


# --- task steps --------------------------------------------------------------------------------------


def _dispatch_columns(uow: UnitOfWork, run_id: str, position: int, step_key: str, attempt: int,
                      request: Mapping[str, Any]) -> dict[str, Any]:
    """Queue the message of a task step's attempt; returns the step columns that make it durable.

    The dispatched step row is the message's outbox record (see :mod:`durable_tasks.outbox`).
    """
    task_id = str(uuid4())
    now = time.time()
    queue = uow.publish_after_commit(StepMessage.from_request(run_id, position, step_key, attempt, task_id, request))
    return {"status": StepStatus.DISPATCHED, "attempt": attempt, "celery_task_id": task_id,
            "publish_after": now + uow.redelivery_after, "publish_count": 0, "queue": queue, "published_at": now}


def dispatch_task(uow: UnitOfWork, run_id: str, position: int, step_key: str, name: str,
                  request: Mapping[str, Any], request_text: str) -> WrittenStep:
    """Journal a new task step as ``dispatched`` and send its first attempt after commit."""
    columns = _dispatch_columns(uow, run_id, position, step_key, 1, request)
    queries.insert_step(uow.conn, run_id=run_id, position=position, step_key=step_key, kind=StepKind.TASK,
                        name=name, request=request_text, created_at=time.time(), **columns)
    step = WrittenStep(run_id, position, step_key, StepKind.TASK, name, StepStatus.DISPATCHED, request=request_text,
                       celery_task_id=columns["celery_task_id"])
    _note_step(uow, step, StepStatus.DISPATCHED, task=name, task_id=columns["celery_task_id"])
    return step


def refuse_task(uow: UnitOfWork, run_id: str, position: int, step_key: str, name: str,
                error: Mapping[str, Any], *, kind: StepKind = StepKind.TASK) -> WrittenStep:
    """Journal a task (or child) step that could not start (unknown task or workflow, bad arguments) as
    ``failed``."""
    now = time.time()
    text = _compact(error)
    queries.insert_step(uow.conn, run_id=run_id, position=position, step_key=step_key, kind=kind,
                        name=name, status=StepStatus.FAILED, attempt=1, error=text, created_at=now, finished_at=now)
    step = WrittenStep(run_id, position, step_key, kind, name, StepStatus.FAILED, error=text)
    _note_step(uow, step, StepStatus.FAILED, error=text)
    return step


def claim_task(uow: UnitOfWork, message: StepMessage, worker: str, now: float) -> bool:
    """A worker takes a dispatched attempt (``running``); False when it is taken or done already."""
    if not queries.claim_step(uow.conn, message.run_id, message.position, message.attempt, worker, now):
        return False
    uow.note(Transition("step", message.run_id, StepStatus.RUNNING, now, message.position, message.step_key,
                        StepKind.TASK, message.attempt, {"worker": worker, "task": message.task,
                                                         "task_id": message.task_id}))
    return True


# --- inline steps ------------------------------------------------------------------------------------


def start_inline(uow: UnitOfWork, run_id: str, position: int, step_key: str, name: str, attempt: int,
                 worker: str, *, exists: bool) -> WrittenStep:
    """Journal that the coordinator runs attempt ``attempt`` of an inline step now (``running``)."""
    now = time.time()
    if exists:
        queries.update_step(uow.conn, run_id, position, status=StepStatus.RUNNING, attempt=attempt, worker=worker,
                            started_at=now)
    else:
        queries.insert_step(uow.conn, run_id=run_id, position=position, step_key=step_key, kind=StepKind.INLINE,
                            name=name, status=StepStatus.RUNNING, attempt=attempt, worker=worker, created_at=now,
                            started_at=now)
    step = WrittenStep(run_id, position, step_key, StepKind.INLINE, name, StepStatus.RUNNING, attempt,
                       worker=worker, created_at=now, started_at=now)
    _note_step(uow, step, StepStatus.RUNNING, worker=worker)
    return step


# --- attempts ----------------------------------------------------------------------------------------


def _record_attempt(uow: UnitOfWork, step: StepRow | WrittenStep, attempt: int, status: AttemptStatus, *,
                    worker: str | None, started_at: float | None, error: Mapping[str, Any] | None = None) -> None:
    now = time.time()
    queries.insert_attempt(
        uow.conn, run_id=step.run_id, position=step.position, attempt=attempt, status=status,
        error_type=error.get("type") if error else None,
        error_message=error.get("message") if error else None,
        traceback=error.get("traceback") if error else None,
        worker=worker, started_at=started_at, duration=None if started_at is None else now - started_at,
    )


def attempt_succeeded(uow: UnitOfWork, step: StepRow | WrittenStep, attempt: int, result: str, *,
                      worker: str | None, started_at: float, messages: Sequence[tuple[OwnMessage, str]] = ()) -> bool:
    """Journal the result of ``step``; False when another delivery journaled it already (a duplicate).

    Any attempt's result is accepted while the step is unfinished: a worker presumed dead that still
    finishes saves the re-dispatched attempt its work. A first-try success needs no attempt row: the
    step row describes it. ``messages`` (with their encoded payloads) are those the attempt sent with
    ``current_step().send_task`` / ``.publish``: they commit with the result, or (for a duplicate) not at all.
    """
    now = time.time()
    if not queries.finish_step(uow.conn, step.run_id, step.position, status=StepStatus.SUCCEEDED, result=result,
                               finished_at=now):
        return False
    _succeeded(uow, step, attempt, worker, started_at, now, messages)
    return True


def attempt_succeeded_locking_run(uow: UnitOfWork, step: StepRow | WrittenStep, attempt: int, result: str, *,
                                  worker: str, started_at: float, from_position: int,
                                  messages: Sequence[tuple[OwnMessage, str]] = ()
                                  ) -> tuple[bool, LockedRun | None, dict[int, StepRow]]:
    """:func:`attempt_succeeded` for a task step whose run is advanced next in the same transaction: locks the
    run first and reads its steps at ``from_position`` and after (one round trip on PostgreSQL).

    Returns (journaled, the locked run or None, the steps read).
    """
    now = time.time()
    finished, run, found = queries.finish_step_locking_run(
        uow.conn, step.run_id, step.position, status=StepStatus.SUCCEEDED, result=result, finished_at=now,
        from_position=from_position)
    if finished:
        _succeeded(uow, step, attempt, worker, started_at, now, messages)
    return finished, run, found


def _succeeded(uow: UnitOfWork, step: StepRow | WrittenStep, attempt: int, worker: str | None, started_at: float,
               now: float, messages: Sequence[tuple[OwnMessage, str]]) -> None:
    for message, payload in messages:
        uow.send_message(message, payload)
    if attempt > 1:
        _record_attempt(uow, step, attempt, AttemptStatus.SUCCEEDED, worker=worker, started_at=started_at)
    _note_step(uow, step, StepStatus.SUCCEEDED, attempt, worker=worker, duration=now - started_at)


def attempt_failed(uow: UnitOfWork, step: StepRow | WrittenStep, attempt: int, exc: BaseException, *,
                   policy: RetryPolicy, worker: str, started_at: float,
                   celery_retry: CeleryRetry | None = None) -> StepStatus | None:
    """Journal a failed attempt and what follows it: a retry after a durable backoff, or a failed step.

    Returns the step's new status, or None for a stale attempt (the step moved on meanwhile: only the
    attempt row is kept). A failed step makes the workflow raise ``StepFailedError`` at its next replay,
    which parks the run as ``failed`` unless the workflow handles it.
    """
    error = error_record(exc, step_key=step.step_key, attempt=attempt)
    _record_attempt(uow, step, attempt, AttemptStatus.FAILED, worker=worker, started_at=started_at, error=error)
    if step.attempt != attempt or step.status != StepStatus.RUNNING:
        return None
    used = queries.attempts_since_resume(uow.conn, step.run_id, step.position)
    decision = after_failure(policy, used, exc, celery_retry)
    status = _fail_or_retry(uow, step, error, decision.retry, decision.delay, duration=time.time() - started_at,
                            worker=worker)
    logger.info("Step %r of run %s failed on attempt %d (%s: %s); %s.", step.step_key, step.run_id, attempt,
                type(exc).__name__, exc, f"next attempt in {decision.delay:.1f}s" if decision.retry else "giving up")
    return status


def _fail_or_retry(uow: UnitOfWork, step: StepRow | WrittenStep, error: Mapping[str, Any], retry: bool,
                   delay: float, **detail: Any) -> StepStatus:
    now = time.time()
    text = _compact(error)
    if retry:
        queries.update_step(uow.conn, step.run_id, step.position, status=StepStatus.RETRYING, error=text)
        arm_timer(uow, step.run_id, step.position, TimerPurpose.RETRY, now + delay)
        _note_step(uow, step, StepStatus.RETRYING, error=text, due_at=now + delay, **detail)
        return StepStatus.RETRYING
    queries.update_step(uow.conn, step.run_id, step.position, status=StepStatus.FAILED, error=text, finished_at=now)
    _note_step(uow, step, StepStatus.FAILED, error=text, **detail)
    return StepStatus.FAILED


def attempt_lost(uow: UnitOfWork, step: StepRow, max_lost_attempts: int) -> bool:
    """Journal that ``step``'s running attempt died with its worker; True when the step is now failed.

    After ``max_lost_attempts`` losses in a row the step fails (a step that kills its worker must not loop
    forever); otherwise the caller starts the next attempt.
    """
    error: dict[str, Any] = {
        "type": WORKER_LOST, "step": step.step_key, "attempt": step.attempt,
        "message": f"worker {step.worker} stopped heartbeating while it ran attempt {step.attempt} of step "
                   f"{step.step_key!r}"}
    _record_attempt(uow, step, step.attempt, AttemptStatus.LOST, worker=step.worker, started_at=step.started_at,
                    error=error)
    _note_step(uow, step, AttemptStatus.LOST, worker=step.worker)
    recent = queries.recent_attempt_statuses(uow.conn, step.run_id, step.position, max_lost_attempts)
    lost = len(list(takewhile(lambda status: status == AttemptStatus.LOST, recent)))
    if lost < max_lost_attempts:
        return False
    error["message"] += (f"; lost {lost} times in a row (max_lost_attempts={max_lost_attempts}), so the run is "
                         f"parked: find out why the step kills its worker, then `durable runs resume {step.run_id}`")
    _fail_or_retry(uow, step, error, retry=False, delay=0)
    return True


def next_attempt(uow: UnitOfWork, step: StepRow, **detail: Any) -> None:
    """Start ``step``'s next attempt: send a task step again; an inline step runs at the next replay."""
    attempt = step.attempt + 1
    if step.kind == StepKind.TASK:
        if step.request is None:
            raise ValueError(f"step {step.step_key!r} of run {step.run_id} was never dispatched")
        columns = _dispatch_columns(uow, step.run_id, step.position, step.step_key, attempt, loads(step.request))
        queries.update_step(uow.conn, step.run_id, step.position, worker=None, started_at=None, finished_at=None,
                            error=None, **columns)
    else:
        queries.update_step(uow.conn, step.run_id, step.position, status=StepStatus.DISPATCHED, attempt=attempt,
                            error=None, finished_at=None)
        uow.send_advance(step.run_id)
    _note_step(uow, step, StepStatus.DISPATCHED, attempt, **detail)


def restart_step(uow: UnitOfWork, step: StepRow) -> None:
    """An operator runs a failed (or retrying) step again now, with a fresh retry budget.

    The only transition that changes a step after it succeeded or failed, so it bumps the run's ``wake_seq``:
    coordinators read the journal of such a run again in full (see :mod:`durable_tasks.journal`).
    """
    queries.wake(uow.conn, step.run_id)
    if step.kind in (StepKind.TASK, StepKind.CHILD) and not step.request:
        # It failed before it started (unknown task or workflow, bad arguments): the replay starts it afresh.
        queries.delete_step(uow.conn, step.run_id, step.position)
        return
    queries.cancel_timers(uow.conn, step.run_id, step.position, time.time())
    _record_attempt(uow, step, step.attempt + 1, AttemptStatus.RESUMED, worker=None, started_at=None)
    next_attempt(uow, step)


# --- child runs --------------------------------------------------------------------------------------

def start_child(uow: UnitOfWork, parent_id: str, position: int, step_key: str, workflow: str, *, fingerprint: str,
                input: str, request: str, attempt: int, exists: bool) -> WrittenStep:
    """Journal attempt ``attempt`` of a ``child`` step as ``running`` and create its child run (first advance
    after this commit); ``exists``: a retry or an operator's restart of the step."""
    now = time.time()
    child_id = child_run_id(parent_id, step_key, attempt)
    create_run(uow, run_id=child_id, workflow=workflow, input=input, fingerprint=fingerprint, parent_id=parent_id,
               parent_position=position)
    uow.send_advance(child_id)
    if exists:
        queries.update_step(uow.conn, parent_id, position, status=StepStatus.RUNNING, attempt=attempt, request=request,
                            error=None, result=None, started_at=now, finished_at=None)
    else:
        queries.insert_step(uow.conn, run_id=parent_id, position=position, step_key=step_key, kind=StepKind.CHILD,
                            name=workflow, status=StepStatus.RUNNING, attempt=attempt, request=request,
                            created_at=now, started_at=now)
    step = WrittenStep(parent_id, position, step_key, StepKind.CHILD, workflow, StepStatus.RUNNING, attempt,
                       request=request, created_at=now, started_at=now)
    _note_step(uow, step, StepStatus.RUNNING, child=child_id)
    return step


def _settle_parent_step(uow: UnitOfWork, run: LockedRun, status: str, result: str | None, error: str | None) -> None:
    """A finished child settles its parent's ``child`` step in its final transaction, locking the parent's row
    after its own (see the lock order above); nothing happens when the step no longer waits for this child."""
    if run.parent_id is None or run.parent_position is None:
        return
    queries.lock_run(uow.conn, run.parent_id)
    step = queries.get_step(uow.conn, run.parent_id, run.parent_position)
    if step is None or step.status != StepStatus.RUNNING \
            or child_run_id(step.run_id, step.step_key, step.attempt) != run.id:
        logger.info("Child run %s finished %s; its parent %s no longer waits for it.", run.id, status, run.parent_id)
        return
    if status == RunStatus.SUCCEEDED:
        attempt_succeeded(uow, step, step.attempt, result or "null", worker=None,
                          started_at=step.started_at or time.time())
        uow.send_advance(step.run_id)
        return
    failure = child_failure(run.id, run.workflow, status, error, step_key=step.step_key, attempt=step.attempt)
    _record_attempt(uow, step, step.attempt, AttemptStatus.FAILED, worker=None, started_at=step.started_at,
                    error=failure)
    used = queries.attempts_since_resume(uow.conn, step.run_id, step.position)
    decision = after_child_failure(step.request, used, status, failure)
    if _fail_or_retry(uow, step, failure, decision.retry, decision.delay, child=run.id) == StepStatus.FAILED:
        uow.send_advance(step.run_id)


# --- sleeps, timers and markers ----------------------------------------------------------------------


def start_sleep(uow: UnitOfWork, run_id: str, position: int, step_key: str, until: float) -> WrittenStep:
    """Journal a durable sleep until the epoch time ``until`` and its timer (a time past is over at once)."""
    now = time.time()
    request = _compact({"seconds": max(0.0, until - now), "until": until})
    status = StepStatus.SLEEPING if until > now else StepStatus.SUCCEEDED
    queries.insert_step(uow.conn, run_id=run_id, position=position, step_key=step_key, kind=StepKind.SLEEP,
                        name=step_key, status=status, request=request, created_at=now,
                        finished_at=None if until > now else now)
    if until > now:
        arm_timer(uow, run_id, position, TimerPurpose.SLEEP, until)
    step = WrittenStep(run_id, position, step_key, StepKind.SLEEP, step_key, status, request=request, result="null")
    _note_step(uow, step, status, due_at=until)
    return step


def arm_timer(uow: UnitOfWork, run_id: str, position: int, purpose: TimerPurpose, due_at: float) -> int:
    """Write a pending timer; with a timer transport, one due within its window goes to it after commit."""
    timer_id = queries.insert_timer(uow.conn, run_id, position, purpose, due_at)
    if uow.timer_window is not None and due_at - time.time() <= uow.timer_window:
        queries.mark_handed_off(uow.conn, [timer_id], time.time())
        uow.send_timer(timer_id, run_id, due_at)
    return timer_id


def hand_off_timers(uow: UnitOfWork, due_timers: Sequence[TimerRow]) -> None:
    """Give pending timers that come near to the timer transport (written long before, or before a restart)."""
    if not due_timers:
        return
    queries.mark_handed_off(uow.conn, [timer.id for timer in due_timers], time.time())
    for timer in due_timers:
        uow.send_timer(timer.id, timer.run_id, timer.due_at)


def fire_timer(uow: UnitOfWork, timer: TimerRow) -> bool:
    """Fire one timer exactly once: end its sleep, start its step's next attempt, or time out its event wait.

    The run row is locked first, then the timer is marked fired (``fired_at IS NULL``), then the step's
    state decides: an event delivered in the same instant either committed first (the wait is over and
    the timer does nothing) or waits for this commit (and finds the wait timed out). False: nothing to do.
    """
    run = queries.get_run(uow.conn, timer.run_id, lock=True)
    if not queries.fire_timer(uow.conn, timer.id, time.time()):
        return False
    step = queries.get_step(uow.conn, timer.run_id, timer.position)
    if run is None or run.status not in ACTIVE_RUN_STATUSES or step is None:
        return False
    if timer.purpose == TimerPurpose.SLEEP and step.status == StepStatus.SLEEPING:
        queries.update_step(uow.conn, step.run_id, step.position, status=StepStatus.SUCCEEDED, result="null",
                            finished_at=time.time())
        _note_step(uow, step, StepStatus.SUCCEEDED, due_at=timer.due_at, timer=timer.purpose)
        uow.send_advance(step.run_id)
    elif timer.purpose == TimerPurpose.RETRY and step.status == StepStatus.RETRYING:
        next_attempt(uow, step, due_at=timer.due_at, timer=timer.purpose)
    elif timer.purpose == TimerPurpose.EVENT_TIMEOUT and step.status == StepStatus.WAITING:
        _time_out(uow, step, json.loads(step.request or "{}"))
        uow.send_advance(step.run_id)
    else:
        return False
    return True


# --- event waits (their other transitions are in event_transitions.py) -----------------------------


def event_timeout_error(step_key: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """The journaled error of an event wait that timed out (``request`` is the wait's step request)."""
    name, key, timeout = request.get("event"), request.get("key"), request.get("timeout") or 0
    on_key = f" on key {key!r}" if key is not None else ""
    return {"type": EVENT_TIMEOUT, "step": step_key, "event": name, "key": key, "timeout": timeout,
            "message": f"no event {name!r}{on_key} arrived within its timeout of {describe(timeout)}"}


def _time_out(uow: UnitOfWork, step: StepRow, request: Mapping[str, Any]) -> None:
    error = _compact(event_timeout_error(step.step_key, request))
    queries.update_step(uow.conn, step.run_id, step.position, status=StepStatus.FAILED, error=error,
                        finished_at=time.time())
    event_queries.delete_waits(uow.conn, step.run_id, step.position)
    _note_step(uow, step, StepStatus.FAILED, error=error, event=request.get("event"))


def record_message(uow: UnitOfWork, run_id: str, position: int, step_key: str, message: OwnMessage,
                   payload: str) -> WrittenStep:
    """Journal a workflow's own message (``ctx.send_task``, ``ctx.publish``) as a finished ``message`` step and
    send it after commit; its result is the message id, so a replay returns the id and sends nothing."""
    now = time.time()
    name = message.task if isinstance(message, TaskMessage) else message.topic
    result = _compact_value(message.id)
    queries.insert_step(uow.conn, run_id=run_id, position=position, step_key=step_key, kind=StepKind.MESSAGE,
                        name=name, status=StepStatus.SUCCEEDED, request=payload, result=result, created_at=now,
                        finished_at=now)
    uow.send_message(message, payload)
    step = WrittenStep(run_id, position, step_key, StepKind.MESSAGE, name, StepStatus.SUCCEEDED, request=payload,
                       result=result, created_at=now, finished_at=now)
    _note_step(uow, step, StepStatus.SUCCEEDED, message_id=message.id)
    return step


def _compact_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def record_marker(uow: UnitOfWork, run_id: str, position: int, change_id: str) -> WrittenStep:
    """Journal that this run follows the code after change ``change_id`` (``ctx.patched``)."""
    now = time.time()
    queries.insert_step(uow.conn, run_id=run_id, position=position, step_key=change_id, kind=StepKind.MARKER,
                        name=change_id, status=StepStatus.SUCCEEDED, result="true", created_at=now, finished_at=now)
    step = WrittenStep(run_id, position, change_id, StepKind.MARKER, change_id, StepStatus.SUCCEEDED, result="true")
    _note_step(uow, step, StepStatus.SUCCEEDED)
    return step
