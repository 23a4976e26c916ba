"""The coordinator: replays a run's workflow under the run's lock and journals what it does next.

One advance is one transaction in the common case: lock the run row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's write transaction already holds the database lock) and, in the same statement, read
the journal rows that may have changed since this process last advanced the run (all of them for a run it
does not keep, see :mod:`durable_tasks.journal`), call the workflow, write the steps it starts (each
dispatched step row is its message's outbox record), and update the run row only if its status changed.
Only an inline step splits the advance: its transaction commits before the user's function runs, so no
lock is held during user code. Before that commit the coordinator
takes the run's *lease* (renewed by its process's heartbeat), which keeps other coordinators out (I4); one
that finds the lease taken bumps ``wake_seq`` instead, and the holder replays once more before it lets
go, so no wake-up is lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import event_transitions, outgoing, transitions
from .attempts import error_record
from .children import cancel_request
from .current import StepInfo, Tick, running_step
from .errors import (
    ConfigurationError,
    NonDeterminismError,
    PayloadError,
    StepFailedError,
    Suspend,
    UnknownTaskError,
    UnknownWorkflowError,
)
from .journal import Journal
from .messages import OwnMessage, step_request
from .outbox import UnitOfWork
from .outgoing import OutgoingBuffer
from .records import EventWait, LockedRun, StepRow, WrittenStep
from .registry import WorkflowDefinition, step_definition
from .retry import NO_RETRY, RetryPolicy
from .runtime import Runtime
from .serialization import dumps, loads
from .store import queries
from .tracing import TRACE_KEY
from .transitions import RunOutcome
from .vocabulary import ACTIVE_RUN_STATUSES, RunStatus, StepKind, StepStatus
from .workflow import WorkflowContext

logger = logging.getLogger("durable_tasks.coordinator")

# The run's status while it waits on a step of this kind (task and inline steps: running).
SUSPENDED_AS: dict[str, RunStatus] = {StepKind.SLEEP: RunStatus.SLEEPING, StepKind.EVENT: RunStatus.WAITING}


def advance(runtime: Runtime, run_id: str, *, uow: UnitOfWork | None = None, consume: int | None = None) -> None:
    """Replay run ``run_id`` and journal its next steps; a no-op when another coordinator holds it.

    ``uow`` continues the caller's transaction (a step wrapper journals a result and advances in one
    commit); ``consume`` is the id of the outbox message that asked for this advance. A caller that
    passes ``uow`` must have called ``runtime.identity.start()`` before opening it (the first heartbeat is
    a write of its own, which would wait on the caller's write lock on SQLite).
    """
    owner = runtime.identity.start()
    if uow is not None:
        _advance(runtime, uow, run_id, owner, consume)
        return
    with runtime.unit_of_work() as own:
        _advance(runtime, own, run_id, owner, consume)


def finish_and_advance(runtime: Runtime, uow: UnitOfWork, step: StepRow, attempt: int, result: str, *,
                       started_at: float, messages: Sequence[tuple[OwnMessage, str]] = ()) -> bool:
    """Journal a task step's result (with the messages its body sent) and advance its run in the caller's
    transaction; False for a duplicate.

    The run is locked first, and the step written and the changed journal rows read with it (one round trip
    on PostgreSQL). The caller must have called ``runtime.identity.start()`` before opening ``uow``.
    """
    owner = runtime.identity.start()
    cached = runtime.journals.take(step.run_id)  # put back after the commit, so a rollback leaves nothing stale
    from_position = min(cached.changeable_from(), step.position) if cached is not None else 0
    finished, run, fresh = transitions.attempt_succeeded_locking_run(
        uow, step, attempt, result, worker=owner, started_at=started_at, from_position=from_position,
        messages=messages)
    if finished:
        _advance(runtime, uow, step.run_id, owner, None, locked=(cached, from_position, run, fresh))
    return finished


def _advance(runtime: Runtime, uow: UnitOfWork, run_id: str, owner: str, consume: int | None,
             locked: tuple[Journal | None, int, LockedRun | None, dict[int, StepRow]] | None = None) -> None:
    if locked is None:
        cached = runtime.journals.take(run_id)  # put back after the commit, so a rollback leaves nothing stale
        from_position = cached.changeable_from() if cached is not None else 0
        run, fresh = queries.lock_run_with_steps(uow.conn, run_id, from_position)
    else:  # the caller locked the run and read its steps
        cached, from_position, run, fresh = locked
    payload = queries.consume_outbox(uow.conn, consume) if consume is not None else {}
    if payload.get("announce") and run is not None:  # an operator's change
        transitions.announce_run(uow, run, payload["announce"])
    if run is None or run.status not in ACTIVE_RUN_STATUSES:
        return
    cancel = payload.get("cancel") or _cancelled_parent(uow, run)
    if cancel:  # the parent was cancelled: so is this child, and its own children
        transitions.cancel_run(uow, run, cancel["reason"], terminate=bool(cancel.get("terminate")))
        return
    leased = run.lease_owner is not None and (run.lease_until or 0) >= time.time()
    if leased and (run.lease_owner != owner or runtime.identity.holds(run_id)):
        queries.wake(uow.conn, run_id)  # the holder replays once more before it lets go
        return
    workflow = runtime.registry.find(run.workflow)
    if workflow is None:
        uow.send_advance(run_id)  # keep a message for a worker that has the code; the relay resends it
        logger.error(
            "Run %s needs workflow %r, which is not registered in worker %s. Import the module that defines "
            "it in every worker (Celery's include/imports). The run stays %s; nothing was lost, and the "
            "advance will be retried.", run_id, run.workflow, owner, run.status,
        )
        return
    if cached is None or cached.wake_seq != run.wake_seq:  # not kept here, or an operator restarted a step
        journal = Journal(run.wake_seq)
        journal.merge(fresh if from_position == 0 else queries.load_steps_from(uow.conn, run_id, 0), 0)
    else:
        journal = cached
        journal.merge(fresh, from_position)
    lease = Lease(runtime, run_id, owner)
    try:
        while True:
            outcome = Replay(runtime, uow, run, workflow, lease, journal).execute()
            if not lease.taken:  # one transaction, under the row lock: nobody could wake the run meanwhile
                transitions.settle_run(uow, run, outcome)
                _keep(runtime, uow, run_id, journal, outcome)
                return
            if transitions.settle_run(uow, run, outcome, lease_owner=owner, wake_seq=lease.wake_seq):
                _keep(runtime, uow, run_id, journal, outcome)
                return
            current = queries.get_run(uow.conn, run_id)
            if current is None or current.lease_owner != owner:
                logger.warning("Run %s: lease lost during its advance; another coordinator took over.", run_id)
                return
            lease.wake_seq = current.wake_seq  # woken while we replayed: replay once more, on what changed
            if current.wake_seq != journal.wake_seq:
                journal = Journal(current.wake_seq)
            from_position = journal.changeable_from()
            journal.merge(queries.load_steps_from(uow.conn, run_id, from_position), from_position)
    finally:
        lease.drop()


def _cancelled_parent(uow: UnitOfWork, run: LockedRun) -> dict[str, Any] | None:
    """The cancel request of a child whose parent was cancelled, read at the child's advance: a busy worker may
    finish the child's step before it gets to the request the parent's cancel queued (a read, no lock)."""
    if run.parent_id is None:
        return None
    parent = queries.get_run(uow.conn, run.parent_id)
    if parent is None or parent.status != RunStatus.CANCELLED:
        return None
    return cancel_request(parent.id, loads(parent.error) or {})


def _keep(runtime: Runtime, uow: UnitOfWork, run_id: str, journal: Journal, outcome: RunOutcome) -> None:
    """Keep the run's journal for its next advance here, once this commit is through (unless it finished)."""
    if not outcome.finished:
        uow.after_commit(lambda: runtime.journals.keep(run_id, journal))


class Lease:
    """The run's lease, taken only when an advance must commit before it ends (around an inline step)."""

    def __init__(self, runtime: Runtime, run_id: str, owner: str) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self.owner = owner
        self.taken = False
        self.wake_seq = 0

    def take(self, uow: UnitOfWork) -> None:
        if self.taken:
            return
        until = time.time() + self.runtime.settings.worker_timeout
        self.wake_seq = queries.take_lease(uow.conn, self.run_id, self.owner, until)
        self.runtime.identity.hold(self.run_id)
        self.taken = True

    def drop(self) -> None:
        if self.taken:
            self.runtime.identity.release(self.run_id)


class Replay:
    """One call of the workflow function against the journal; the :class:`JournalWriter` for its ``ctx``."""

    def __init__(self, runtime: Runtime, uow: UnitOfWork, run: LockedRun, workflow: WorkflowDefinition,
                 lease: Lease, journal: Journal) -> None:
        self.runtime = runtime
        self.uow = uow
        self.lease = lease
        self.run = run
        self.workflow = workflow
        self.journal = journal
        self.trace: str | None = None
        self.max_sleep = runtime.settings.max_sleep
        self.tick = None if run.schedule is None or run.scheduled_for is None else \
            Tick.of(run.schedule, run.scheduled_for, run.created_at)

    def now(self) -> float:
        return time.time()

    def execute(self) -> RunOutcome:
        """Call the workflow; return what it decided for the run (status, result or error)."""
        run = self.run
        memo = self.journal.memo
        ctx = WorkflowContext(run.id, run.workflow, self.journal.rows, self, tick=self.tick, memo=memo)
        if self.workflow.keeps_input:  # decoded once per run: its function never changes its arguments
            call = memo.get("input")
            if call is None:
                call = memo["input"] = loads(run.input)
        else:
            call = loads(run.input)
        self.trace = call.get(TRACE_KEY)
        try:
            value = self.workflow.fn(ctx, *call.get("args", ()), **call.get("kwargs", {}))
        except Suspend as suspended:
            return RunOutcome(SUSPENDED_AS.get(suspended.kind, RunStatus.RUNNING))
        except StepFailedError as exc:
            error = {"type": exc.error_type, "message": exc.error_message, "step": exc.step_key,
                     "summary": str(exc)}
            return self._failed(error)
        except NonDeterminismError as exc:
            return self._failed(error_record(exc, with_traceback=False))
        except Exception as exc:
            return self._failed(error_record(exc))
        try:
            result = dumps(value, what=f"result of run {run.id} (workflow {run.workflow!r})",
                           max_bytes=self.runtime.settings.max_payload_bytes)
        except PayloadError as exc:
            return self._failed(error_record(exc, with_traceback=False))
        return RunOutcome(RunStatus.SUCCEEDED, result=result)

    def _failed(self, error: dict[str, Any]) -> RunOutcome:
        logger.warning("Run %s of %s parked as failed: %s: %s", self.run.id, self.run.workflow,
                       error.get("type"), error.get("message"))
        return RunOutcome(RunStatus.FAILED, error=json.dumps(error))

    # --- JournalWriter ------------------------------------------------------------------------------

    def dispatch_task(self, position: int, step_key: str, name: str, call: dict[str, Any]) -> StepRow:
        run_id = self.run.id
        try:
            policy = self._task_policy(name, step_key)
            options = dict(call["options"])
            if policy.timeout:
                options.setdefault("soft_time_limit", policy.timeout)
                options.setdefault("time_limit", policy.timeout + 5)
            request = step_request(name, call["args"], call["kwargs"], options, policy.to_json(), self.trace,
                                   self.tick.to_json() if self.tick is not None else None)
            text = dumps(request, what=f"arguments of step {step_key!r} in run {run_id}",
                         max_bytes=self.runtime.settings.max_payload_bytes)
        except (PayloadError, ConfigurationError, UnknownTaskError) as exc:
            error = error_record(exc, step_key=step_key, with_traceback=False)
            return self._record(transitions.refuse_task(self.uow, run_id, position, step_key, name, error))
        return self._record(transitions.dispatch_task(self.uow, run_id, position, step_key, name, request, text))

    def _record(self, row: StepRow) -> StepRow:
        """A row this replay wrote: what the journal holds now (kept after the commit)."""
        self.journal.record(row)
        return row

    def _task_policy(self, name: str, step_key: str) -> RetryPolicy:
        _, definition = self.runtime.step_task(name, step_key=step_key, run_id=self.run.id)
        return definition.retry or self.workflow.retry or NO_RETRY

    def run_inline(self, position: int, step_key: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], row: StepRow | None) -> StepRow:
        run_id = self.run.id
        worker = self.runtime.identity.worker_id
        name = getattr(fn, "__name__", step_key)
        definition = step_definition(fn)
        policy = (definition.retry if definition else None) or self.workflow.retry or NO_RETRY
        attempt = row.attempt if row is not None else 1
        if row is not None and row.status == StepStatus.RUNNING:
            # An attempt died with its process (this coordinator now holds the lease): journal it as lost.
            if transitions.attempt_lost(self.uow, row, self.runtime.settings.max_lost_attempts):
                return self._record(queries.get_step(self.uow.conn, run_id, position) or row)
            attempt += 1
        step = self._record(transitions.start_inline(self.uow, run_id, position, step_key, name, attempt, worker,
                                                     exists=row is not None))
        outbox = OutgoingBuffer(run_id, step_key, max_bytes=self.runtime.settings.max_payload_bytes,
                                topics=self.runtime.topics)
        self.lease.take(self.uow)
        self.uow.commit()  # publish what the replay started; hold no lock while user code runs
        started = step.started_at or time.time()
        failure: BaseException | None = None
        text = ""
        try:
            with self.runtime.tracing.step_attempt(self.trace, run_id=run_id, step_key=step_key, attempt=attempt,
                                                   kind=StepKind.INLINE), \
                    running_step(StepInfo(run_id, step_key, position, attempt, self.runtime.is_cancelled,
                                          tick=self.tick, _outbox=outbox)):
                value = fn(*args, **kwargs)
            if policy.timeout and time.time() - started > policy.timeout:
                raise TimeoutError(f"took {time.time() - started:.1f}s, over its timeout of {policy.timeout}s")
            text = dumps(value, what=f"result of step {step_key!r} in run {run_id}",
                         max_bytes=self.runtime.settings.max_payload_bytes)
        except Exception as exc:
            failure = exc
        self.uow.begin()
        if failure is None:
            transitions.attempt_succeeded(self.uow, step, attempt, text, worker=worker, started_at=started,
                                          messages=outbox.messages)
            return self._record(WrittenStep(run_id, position, step_key, StepKind.INLINE, name, StepStatus.SUCCEEDED,
                                            attempt, result=text))
        transitions.attempt_failed(self.uow, step, attempt, failure, policy=policy, worker=worker, started_at=started)
        return self._record(queries.get_step(self.uow.conn, run_id, position) or step)

    def start_sleep(self, position: int, step_key: str, until: float) -> StepRow:
        return self._record(transitions.start_sleep(self.uow, self.run.id, position, step_key, until))

    def start_wait(self, position: int, step_key: str, wait: EventWait, row: StepRow | None) -> StepRow:
        return self._record(event_transitions.start_wait(self.uow, self.run.id, position, step_key, wait,
                                                         exists=row is not None))

    def record_marker(self, position: int, step_key: str) -> StepRow:
        return self._record(transitions.record_marker(self.uow, self.run.id, position, step_key))

    def send_task(self, position: int, step_key: str, name: str, call: dict[str, Any]) -> StepRow:
        message, payload = outgoing.task_message(self.run.id, f"{self.run.id}:{step_key}", name, call["args"],
                                                 call["kwargs"], call["options"],
                                                 max_bytes=self.runtime.settings.max_payload_bytes)
        return self._record(transitions.record_message(self.uow, self.run.id, position, step_key, message, payload))

    def publish(self, position: int, step_key: str, topic: str, value: Any, key: str | bytes | None) -> StepRow:
        if self.runtime.topics() is None:
            raise ConfigurationError(f"ctx.publish({topic!r}, ...) in run {self.run.id} of workflow "
                                     f"{self.run.workflow!r} needs Kafka: {outgoing.KAFKA_HINT}.")
        message, payload = outgoing.topic_message(self.run.id, f"{self.run.id}:{step_key}", topic, value, key,
                                                  max_bytes=self.runtime.settings.max_payload_bytes)
        return self._record(transitions.record_message(self.uow, self.run.id, position, step_key, message, payload))

    def start_child(self, position: int, step_key: str, workflow: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any], row: StepRow | None) -> StepRow:
        run_id = self.run.id
        try:
            definition = self.runtime.registry.get(workflow)  # UnknownWorkflowError names what is registered
            # The child's input carries the parent's trace context, so its spans join the parent's trace.
            call = {"args": list(args), "kwargs": kwargs, **({TRACE_KEY: self.trace} if self.trace else {})}
            text = dumps(call, what=f"input of child step {step_key!r} in run {run_id}",
                         max_bytes=self.runtime.settings.max_payload_bytes)
        except (PayloadError, UnknownWorkflowError) as exc:
            if row is not None:
                raise  # a retried child whose workflow vanished: the run is parked with the error
            error = error_record(exc, step_key=step_key, with_traceback=False)
            return self._record(transitions.refuse_task(self.uow, run_id, position, step_key, workflow, error,
                                                        kind=StepKind.CHILD))
        # The step's retry policy (the parent workflow's) travels in its request: a child may finish in a worker
        # that does not import the parent.
        request = json.dumps({"workflow": definition.name, "retry": (self.workflow.retry or NO_RETRY).to_json()})
        return self._record(transitions.start_child(self.uow, run_id, position, step_key, definition.name,
                                                    fingerprint=definition.fingerprint, input=text, request=request,
                                                    attempt=row.attempt if row is not None else 1,
                                                    exists=row is not None))
