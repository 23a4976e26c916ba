"""The coordinator: replays a run's workflow under the run's lock and journals what it does next.

One advance is one transaction in the common case: lock the run row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's write transaction already holds the database lock), load the journal, call the
workflow, write the steps it starts (each dispatched step row is its message's outbox record), and update
the run row only if its status changed. Only an inline step splits the advance: its transaction commits
before the user's function runs, so no lock is held during user code. Before that commit the coordinator
takes the run's *lease* (renewed by its process's heartbeat), which keeps other coordinators out (I4); one
that finds the lease taken bumps ``wake_seq`` instead, and the holder replays once more before it lets
go, so no wake-up is lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .current import StepInfo, running_step
from .definitions import Workflow
from .errors import (
    ConfigurationError,
    NonDeterminismError,
    PayloadError,
    StepFailedError,
    Suspend,
    UnknownTaskError,
)
from .outbox import UnitOfWork
from .retry import NO_RETRY, RetryPolicy
from .serialization import dumps, loads
from .store import queries
from .store.schema import (
    ACTIVE_STATUSES,
    FAILED,
    RUNNING,
    SLEEPING,
    STEP_DISPATCHED,
    STEP_FAILED,
    STEP_RUNNING,
    STEP_SLEEPING,
    STEP_SUCCEEDED,
    SUCCEEDED,
)
from .transitions import (
    StepRow,
    error_record,
    fail_or_retry,
    lost_attempt,
    policy_decision,
    record_attempt,
    send_advance,
    send_dispatch,
    succeed_step,
)
from .workflow import INLINE, MARKER, SLEEP, TASK, WorkflowContext

if TYPE_CHECKING:
    from .app import Durable

logger = logging.getLogger("durable_tasks.coordinator")

STEP_RETRY_ATTR = "__durable_retry__"


def advance(durable: Durable, run_id: str, *, uow: UnitOfWork | None = None, consume: int | None = None) -> None:
    """Replay run ``run_id`` and journal its next steps; a no-op when another coordinator holds it.

    ``uow`` continues the caller's transaction (a step wrapper journals a result and advances in one
    commit); ``consume`` is the id of the outbox message that asked for this advance. A caller that
    passes ``uow`` must have read ``durable.identity.worker_id`` before opening it: the first read writes
    a heartbeat in its own transaction, which would wait on the caller's lock on SQLite.
    """
    _ = durable.identity.worker_id
    if uow is not None:
        _advance(durable, uow, run_id, consume)
        return
    with durable.unit_of_work() as own:
        _advance(durable, own, run_id, consume)


def _advance(durable: Durable, uow: UnitOfWork, run_id: str, consume: int | None) -> None:
    owner = durable.identity.worker_id
    run = queries.lock_run(uow.conn, run_id)
    if consume is not None:
        queries.consume_outbox(uow.conn, consume)
    if run is None or run.status not in ACTIVE_STATUSES:
        return
    leased = run.lease_owner is not None and (run.lease_until or 0) >= time.time()
    if leased and (run.lease_owner != owner or durable.identity.holds(run_id)):
        queries.wake(uow.conn, run_id)  # the holder replays once more before it lets go
        return
    workflow = durable.registry.workflows.get(run.workflow)
    if workflow is None:
        send_advance(uow, run_id)  # keep a message for a worker that has the code; the relay resends it
        logger.error(
            "Run %s needs workflow %r, which is not registered in worker %s. Import the module that defines "
            "it in every worker (Celery's include/imports). The run stays %s; nothing was lost, and the "
            "advance will be retried.", run_id, run.workflow, owner, run.status,
        )
        return
    lease = Lease(durable, run_id, owner)
    try:
        while True:
            values = Replay(durable, uow, run, workflow, lease).execute()
            if not lease.taken:  # one transaction, under the row lock: nobody could wake the run meanwhile
                if values != {"status": run.status} or run.lease_owner is not None:
                    queries.update_run(uow.conn, run_id, lease_owner=None, lease_until=None,
                                       updated_at=time.time(), **values)
                return
            if queries.release_run(uow.conn, run_id, owner, lease.wake_seq, updated_at=time.time(), **values):
                return
            current = queries.get_run(uow.conn, run_id)
            if current is None or current.lease_owner != owner:
                logger.warning("Run %s: lease lost during its advance; another coordinator took over.", run_id)
                return
            lease.wake_seq = current.wake_seq  # woken while we replayed: replay once more
    finally:
        lease.drop()


class Lease:
    """The run's lease, taken only when an advance must commit before it ends (around an inline step)."""

    def __init__(self, durable: Durable, run_id: str, owner: str) -> None:
        self.durable = durable
        self.run_id = run_id
        self.owner = owner
        self.taken = False
        self.wake_seq = 0

    def take(self, uow: UnitOfWork) -> None:
        if self.taken:
            return
        until = time.time() + self.durable.settings.worker_timeout
        self.wake_seq = queries.take_lease(uow.conn, self.run_id, self.owner, until)
        self.durable.identity.hold(self.run_id)
        self.taken = True

    def drop(self) -> None:
        if self.taken:
            self.durable.identity.release(self.run_id)


class Replay:
    """One call of the workflow function against the journal; the :class:`JournalWriter` for its ``ctx``."""

    def __init__(self, durable: Durable, uow: UnitOfWork, run: Any, workflow: Workflow[Any, Any],
                 lease: Lease) -> None:
        self.durable = durable
        self.uow = uow
        self.lease = lease
        self.run = run
        self.workflow = workflow

    def execute(self) -> dict[str, Any]:
        """Call the workflow; return the run columns to write (status, result or error)."""
        run = self.run
        journal = queries.load_journal(self.uow.conn, run.id)
        ctx = WorkflowContext(run.id, run.workflow, journal, self)
        call = loads(run.input)
        try:
            value = self.workflow.fn(ctx, *call.get("args", ()), **call.get("kwargs", {}))
        except Suspend as suspended:
            kind = suspended.args[0] if suspended.args else None
            return {"status": SLEEPING if kind == SLEEP else RUNNING}
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
                           max_bytes=self.durable.settings.max_payload_bytes)
        except PayloadError as exc:
            return self._failed(error_record(exc, with_traceback=False))
        return {"status": SUCCEEDED, "result": result, "error": None, "finished_at": time.time()}

    def _failed(self, error: dict[str, Any]) -> dict[str, Any]:
        logger.warning("Run %s of %s parked as failed: %s: %s", self.run.id, self.run.workflow,
                       error.get("type"), error.get("message"))
        return {"status": FAILED, "error": json.dumps(error), "finished_at": time.time()}

    # --- JournalWriter ------------------------------------------------------------------------------

    def dispatch_task(self, position: int, step_key: str, name: str, request: dict[str, Any]) -> Any:
        run_id = self.run.id
        now = time.time()
        try:
            policy = self._task_policy(name, step_key)
            request["retry"] = policy.to_json()
            if policy.timeout:
                request["options"].setdefault("soft_time_limit", policy.timeout)
                request["options"].setdefault("time_limit", float(policy.timeout) + 5)  # type: ignore[arg-type]
            text = dumps(request, what=f"arguments of step {step_key!r} in run {run_id}",
                         max_bytes=self.durable.settings.max_payload_bytes)
        except (PayloadError, ConfigurationError, UnknownTaskError) as exc:
            error = json.dumps(error_record(exc, step_key=step_key, with_traceback=False))
            queries.insert_step(self.uow.conn, run_id=run_id, position=position, step_key=step_key, kind=TASK,
                                name=name, status=STEP_FAILED, attempt=1, error=error, created_at=now,
                                finished_at=now)
            return StepRow(run_id, position, step_key, TASK, name, STEP_FAILED, error=error)
        queries.insert_step(self.uow.conn, run_id=run_id, position=position, step_key=step_key, kind=TASK,
                            name=name, request=text, created_at=now,
                            **send_dispatch(self.uow, run_id, position, step_key, 1, request))
        return StepRow(run_id, position, step_key, TASK, name, STEP_DISPATCHED, request=text)

    def _task_policy(self, name: str, step_key: str) -> RetryPolicy:
        task = self.durable.app.tasks.get(name)
        if task is None:
            raise UnknownTaskError(
                f"Step {step_key!r} of run {self.run.id} asks for Celery task {name!r}, which is not "
                "registered in this worker. Check the name, and import the module that defines it in every "
                "worker (Celery's include/imports)."
            )
        definition = getattr(task, "__durable_step__", None)
        if definition is None:
            raise ConfigurationError(
                f"Step {step_key!r} of run {self.run.id}: Celery task {name!r} is not a durable step, so its "
                "result could not be journaled. Decorate it with @durable.step (above @app.task)."
            )
        return definition.retry or self.workflow.retry or NO_RETRY

    def run_inline(self, position: int, step_key: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], row: Any) -> Any:
        run_id = self.run.id
        conn = self.uow.conn
        worker = self.durable.identity.worker_id
        name = getattr(fn, "__name__", step_key)
        policy: RetryPolicy = getattr(fn, STEP_RETRY_ATTR, None) or self.workflow.retry or NO_RETRY
        attempt = row.attempt if row is not None else 1
        if row is not None and row.status == STEP_RUNNING:
            # An attempt died with its process (this coordinator now holds the lease): journal it as lost.
            lost = lost_attempt(self.uow, row, self.durable.settings.max_lost_attempts)
            if lost is not None:
                return lost
            attempt += 1
        started = time.time()
        if row is None:
            queries.insert_step(conn, run_id=run_id, position=position, step_key=step_key, kind=INLINE, name=name,
                                status=STEP_RUNNING, attempt=attempt, worker=worker, created_at=started,
                                started_at=started)
        else:
            queries.update_step(conn, run_id, position, status=STEP_RUNNING, attempt=attempt, worker=worker,
                                started_at=started)
        self.lease.take(self.uow)
        self.uow.commit()  # publish what the replay started; hold no lock while user code runs
        failure: BaseException | None = None
        try:
            with running_step(StepInfo(run_id, step_key, position, attempt, self.durable.is_cancelled)):
                value = fn(*args, **kwargs)
            if policy.timeout and time.time() - started > float(policy.timeout):  # type: ignore[arg-type]
                raise TimeoutError(f"took {time.time() - started:.1f}s, over its timeout of {policy.timeout}s")
            text = dumps(value, what=f"result of step {step_key!r} in run {run_id}",
                         max_bytes=self.durable.settings.max_payload_bytes)
        except Exception as exc:
            failure = exc
        self.uow.begin()
        step = StepRow(run_id, position, step_key, INLINE, name, STEP_RUNNING, attempt)
        if failure is None:
            succeed_step(self.uow, run_id, position, text)
            if attempt > 1:  # a first-try success is fully described by the step row itself
                record_attempt(self.uow, step, attempt, status=STEP_SUCCEEDED, worker=worker, started_at=started)
            return StepRow(run_id, position, step_key, INLINE, name, STEP_SUCCEEDED, attempt, result=text)
        error = error_record(failure, step_key=step_key, attempt=attempt)
        record_attempt(self.uow, step, attempt, status=STEP_FAILED, worker=worker, started_at=started, error=error)
        retry, delay = policy_decision(self.uow, policy, step, failure)
        status = fail_or_retry(self.uow, step, attempt, error, retry=retry, delay=delay)
        logger.info("Inline step %r of run %s failed on attempt %d (%s: %s); %s.", step_key, run_id, attempt,
                    type(failure).__name__, failure, f"retrying in {delay:.1f}s" if retry else "giving up")
        return StepRow(run_id, position, step_key, INLINE, name, status, attempt, error=json.dumps(error))

    def start_sleep(self, position: int, step_key: str, seconds: float) -> Any:
        run_id = self.run.id
        now = time.time()
        due = now + seconds
        request = json.dumps({"seconds": seconds, "until": due})
        status = STEP_SLEEPING if seconds > 0 else STEP_SUCCEEDED
        queries.insert_step(self.uow.conn, run_id=run_id, position=position, step_key=step_key, kind=SLEEP,
                            name=step_key, status=status, request=request, created_at=now,
                            finished_at=None if seconds > 0 else now)
        if seconds > 0:
            queries.insert_timer(self.uow.conn, run_id, position, "sleep", due)
        return StepRow(run_id, position, step_key, SLEEP, step_key, status, request=request, result="null")

    def record_marker(self, position: int, step_key: str) -> Any:
        now = time.time()
        queries.insert_step(self.uow.conn, run_id=self.run.id, position=position, step_key=step_key,
                            kind=MARKER, name=step_key, status=STEP_SUCCEEDED, result="true", created_at=now,
                            finished_at=now)
        return StepRow(self.run.id, position, step_key, MARKER, step_key, STEP_SUCCEEDED, result="true")
