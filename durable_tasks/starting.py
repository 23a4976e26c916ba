"""Starting runs: the run row and its first message commit together, once per idempotency key; in the caller's
own transaction when given its connection (see :mod:`durable_tasks.joining`)."""

from __future__ import annotations

from functools import partial
from typing import Any
from uuid import uuid4

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from . import coordinator, transitions
from .errors import IdempotencyConflictError
from .joining import JoinedUnitOfWork, OnCommit, after_commit, check_same_database
from .outbox import UnitOfWork
from .records import RunRow
from .registry import WorkflowDefinition
from .runtime import Runtime
from .serialization import dumps, loads
from .store import queries
from .tracing import TRACE_KEY


def start_run(runtime: Runtime, workflow: WorkflowDefinition, args: tuple[Any, ...] | list[Any],
              kwargs: dict[str, Any], *, idempotency_key: str | None = None, advance_now: bool = False,
              label: str | None = None, connection: Connection | None = None,
              on_commit: OnCommit | None = None) -> str:
    """Start a run of ``workflow`` and return its id.

    The run and its first message commit together; if the broker is down the message waits in the outbox
    and the workers' relay sends it later. The same ``idempotency_key`` with the same workflow and input
    returns the existing run; with another workflow or input it raises :class:`IdempotencyConflictError`.
    With ``advance_now`` this process replays the workflow right away (inline steps run here, task steps
    are dispatched in the same commit as the run) instead of sending it to a worker. ``label`` is what
    operators see instead of the workflow's name (a chain's tasks).

    With ``connection`` (a SQLAlchemy ``Connection`` on the store's database) the run is written in the
    caller's open transaction and its first message leaves once that transaction commits (``on_commit``
    registers the publish, default :func:`~durable_tasks.joining.after_commit`); a rollback leaves no run
    and no message. ``advance_now`` does not apply then: a worker advances the run.
    """
    run_id = str(uuid4())
    with runtime.tracing.run_started(run_id, workflow.name) as trace:
        if connection is not None:
            check_same_database(runtime.store, connection)
            runtime.store.ensure_ready()
            hook = on_commit or partial(after_commit, connection)
            unit: UnitOfWork = JoinedUnitOfWork(
                runtime.store, runtime.publisher, connection, hook, redelivery_after=runtime.settings.redelivery_after,
                observers=runtime.observers, topics=runtime.topics, savepoint=idempotency_key is not None)
            return _start(runtime, workflow, run_id, args, kwargs, trace, idempotency_key, False, label, unit,
                          connection)
        return _start(runtime, workflow, run_id, args, kwargs, trace, idempotency_key, advance_now, label,
                      runtime.unit_of_work(), None)


def _start(runtime: Runtime, workflow: WorkflowDefinition, run_id: str, args: tuple[Any, ...] | list[Any],
           kwargs: dict[str, Any], trace: str | None, idempotency_key: str | None, advance_now: bool,
           label: str | None, unit: UnitOfWork, joined: Connection | None) -> str:
    # The run's trace context travels with its input, so every later span of the run can name its parent.
    call = dumps({"args": list(args), "kwargs": kwargs, **({TRACE_KEY: trace} if trace else {})},
                 what=f"input of workflow {workflow.name!r}", max_bytes=runtime.settings.max_payload_bytes)
    if advance_now:
        runtime.identity.start()  # before the transaction: the first heartbeat is a write of its own
    try:
        with unit as uow:
            if idempotency_key is not None:
                existing = queries.run_for_key(uow.conn, idempotency_key)
                if existing is not None:
                    return _same_run(existing, workflow.name, call, idempotency_key)
            transitions.create_run(uow, run_id=run_id, workflow=workflow.name, input=call,
                                   fingerprint=workflow.fingerprint, idempotency_key=idempotency_key, label=label)
            if advance_now:
                coordinator.advance(runtime, run_id, uow=uow)
            else:
                uow.send_advance(run_id)
    except IntegrityError:
        # Another caller started the same idempotency key between our check and insert.
        if idempotency_key is None:
            raise
        if joined is not None:  # the savepoint rolled back: the caller's transaction goes on
            existing = _run_for_key_joined(runtime, joined, idempotency_key)
        else:
            with runtime.store.read() as conn:
                existing = queries.run_for_key(conn, idempotency_key)
        if existing is None:
            raise
        return _same_run(existing, workflow.name, call, idempotency_key)
    return run_id


def _run_for_key_joined(runtime: Runtime, connection: Connection, idempotency_key: str) -> RunRow | None:
    schema = runtime.store.schema
    previous = connection.get_execution_options().get("schema_translate_map")
    if schema:
        connection.execution_options(schema_translate_map={None: schema})
    try:
        return queries.run_for_key(connection, idempotency_key)
    finally:
        if schema:
            connection.execution_options(schema_translate_map=previous)


def _arguments(text: str) -> dict[str, Any]:
    """A run's input without its trace context: what makes two starts the same start."""
    call: dict[str, Any] = loads(text) or {}
    call.pop(TRACE_KEY, None)
    return call


def start_scheduled(uow: UnitOfWork, *, workflow: str, fingerprint: str, input: str, idempotency_key: str,
                    schedule: str, scheduled_for: float) -> str | None:
    """Start a schedule's run in the caller's transaction, the one that records the tick; returns its id.

    Returns None when a run already holds ``idempotency_key`` (``cron:<schedule>:<tick>``): starting a tick
    again is a no-op, never an error. Callers hold the schedule's row lock, so no other start of this
    schedule races the check; the unique index on the key fences anything else (the transaction then fails,
    and the next pass finds the run). ``input`` is the run's encoded input, checked when it was declared.
    """
    if queries.run_for_key(uow.conn, idempotency_key) is not None:
        return None
    run_id = str(uuid4())
    transitions.create_run(uow, run_id=run_id, workflow=workflow, input=input, fingerprint=fingerprint,
                           idempotency_key=idempotency_key, schedule=schedule, scheduled_for=scheduled_for)
    uow.send_advance(run_id)
    return run_id


def _same_run(existing: RunRow, workflow: str, call: str, idempotency_key: str) -> str:
    """The existing run of ``idempotency_key`` if it is the same start; a conflict error otherwise."""
    if existing.workflow == workflow and _arguments(existing.input) == _arguments(call):
        return existing.id
    differs = "workflow" if existing.workflow != workflow else "input"
    raise IdempotencyConflictError(
        f"Idempotency key {idempotency_key!r} already belongs to run {existing.id} of workflow "
        f"{existing.workflow!r} ({existing.status}), started with a different {differs}: a key names one start "
        f"of one workflow with one input. Use `durable runs show {existing.id}` to see it, or pick another key "
        "for a different start.",
        run_id=existing.id,
    )
