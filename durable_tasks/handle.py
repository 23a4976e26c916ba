"""Handles on runs, and read-only views of runs, steps and attempts for the API and the CLI."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from .canvas import CHAIN_WORKFLOW, first_call
from .children import child_run_id
from .errors import (
    InvalidStateError,
    ResultTimeoutError,
    RunCancelledError,
    RunNotFoundError,
    StoreUnavailableError,
    WorkflowFailedError,
)
from .operations import Operations
from .records import RunRow, StepRow
from .serialization import loads
from .store import queries
from .store.database import Store
from .vocabulary import FINISHED_RUN_STATUSES, AttemptStatus, RunStatus, StepKind, StepStatus

STORE_OUTAGE_TOLERANCE = 60.0


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of a step: ``succeeded``, ``failed``, ``lost`` (its worker died) or ``resumed``."""

    attempt: int
    status: str
    error_type: str | None
    error_message: str | None
    traceback: str | None
    worker: str | None
    started_at: float | None
    duration: float | None


@dataclass(frozen=True)
class StepRecord:
    """A journal row: one step of a run."""

    position: int
    step_key: str
    kind: str
    name: str
    status: str
    attempt: int
    result: Any
    error: dict[str, Any] | None
    worker: str | None
    celery_task_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: tuple[AttemptRecord, ...] = ()
    due_at: float | None = None
    """When a sleep ends (or ended), or when a retrying step's next attempt starts."""
    child_run: str | None = None
    """For a ``child`` step: the id of the child run its current attempt started."""


@dataclass(frozen=True)
class RunRecord:
    """A run as stored: status, input, result or error, timestamps.

    For a durable chain, ``args``/``kwargs`` are what its first task is called with, and ``label`` names its
    tasks (``shop.charge_card → shop.send_receipt``) or the chain's ``name=``; ``workflow`` stays the registry
    name workers look the code up by. ``forked_from`` is the run a fork copied its journal from;
    ``parent_id`` and ``parent_position`` the run and ``child`` step that started a child run.
    """

    id: str
    workflow: str
    status: str
    args: list[Any]
    kwargs: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    idempotency_key: str | None
    fingerprint: str
    created_at: float
    updated_at: float
    finished_at: float | None
    label: str | None = None
    forked_from: str | None = None
    parent_id: str | None = None
    parent_position: int | None = None

    @property
    def name(self) -> str:
        """What operators call the run: its label, else its workflow's name."""
        return self.label or self.workflow

    @classmethod
    def from_row(cls, row: RunRow) -> RunRecord:
        call = loads(row.input) or {}
        args, kwargs = call.get("args", []), call.get("kwargs", {})
        if row.workflow == CHAIN_WORKFLOW and len(args) == 3:
            args, kwargs = first_call(*args)
        return cls(row.id, row.workflow, row.status, args, kwargs, loads(row.result), loads(row.error),
                   row.idempotency_key, row.fingerprint, row.created_at, row.updated_at, row.finished_at,
                   row.label, row.forked_from, row.parent_id, row.parent_position)


@dataclass(frozen=True)
class RunLink:
    """A parent or child run as ``durable runs show`` links it: which run, and the ``child`` step between them.

    ``position`` and ``step_key`` are the step in the parent's journal; ``attempt`` the attempt of that step
    that started the child.
    """

    run_id: str
    workflow: str
    status: str
    position: int | None
    step_key: str | None
    attempt: int | None


def load_family(store: Store, run_id: str) -> tuple[RunLink | None, list[RunLink]]:
    """The parent of a run (None for a top-level run) and its children, oldest first, each with the ``child``
    step of the parent's journal between them."""
    with store.read() as conn:
        run = queries.get_run(conn, run_id)
        if run is None:
            raise RunNotFoundError(f"No run with id {run_id!r} in the durable store at {store.redacted_url()}.")
        parent = queries.get_run(conn, run.parent_id) if run.parent_id else None
        parent_journal = queries.load_journal(conn, parent.id) if parent is not None else {}
        children = queries.children_of(conn, run_id)
        journal = queries.load_journal(conn, run_id) if children else {}
    up = None if parent is None else RunLink(parent.id, parent.workflow, parent.status,
                                             *_started_by(run, parent_journal))
    return up, [RunLink(child.id, child.workflow, child.status, *_started_by(child, journal)) for child in children]


def _started_by(child: RunRow, parent_journal: dict[int, StepRow]) -> tuple[int | None, str | None, int | None]:
    """The position, key and attempt of the parent's step that started ``child``."""
    position = child.parent_position
    step = parent_journal.get(position) if position is not None else None
    if step is None:
        return position, None, None
    attempt = next((n for n in range(step.attempt, 0, -1) if child_run_id(step.run_id, step.step_key, n) == child.id),
                   None)
    return position, step.step_key, attempt


def load_run(store: Store, run_id: str) -> RunRecord:
    with store.read() as conn:
        row = queries.get_run(conn, run_id)
    if row is None:
        raise RunNotFoundError(f"No run with id {run_id!r} in the durable store at {store.redacted_url()}.")
    return RunRecord.from_row(row)


def load_steps(store: Store, run_id: str) -> list[StepRecord]:
    with store.read() as conn:
        journal = queries.load_journal(conn, run_id)
        attempts = queries.list_attempts(conn, run_id)
        timers = queries.pending_timers(conn, run_id)
    by_position: dict[int, list[AttemptRecord]] = {}
    for row in attempts:
        by_position.setdefault(row.position, []).append(AttemptRecord(
            row.attempt, row.status, row.error_type, row.error_message, row.traceback, row.worker,
            row.started_at, row.duration))
    return [
        StepRecord(row.position, row.step_key, row.kind, row.name, row.status, row.attempt, loads(row.result),
                   _current_error(row), row.worker, row.celery_task_id, row.created_at, row.started_at,
                   row.finished_at, tuple(by_position.get(row.position, ())) or _first_try(row),
                   timers.get(row.position) or _sleep_until(row), _child_run(row))
        for _, row in sorted(journal.items())
    ]


def _child_run(row: StepRow) -> str | None:
    if row.kind != StepKind.CHILD or not row.request:  # no request: it never started (unknown workflow)
        return None
    return child_run_id(row.run_id, row.step_key, row.attempt)


def _sleep_until(row: StepRow) -> float | None:
    if row.kind != StepKind.SLEEP or not row.request:
        return None
    until = json.loads(row.request).get("until")
    return float(until) if until is not None else None


def _current_error(row: StepRow) -> dict[str, Any] | None:
    """The step's error now: why it failed, was cancelled while it ran, or waits to retry; earlier failures are
    its attempts'."""
    if row.error is None or row.status not in (StepStatus.FAILED, StepStatus.RETRYING, StepStatus.CANCELLED):
        return None
    error: dict[str, Any] = json.loads(row.error)
    return error


def _first_try(row: StepRow) -> tuple[AttemptRecord, ...]:
    """A step that succeeded on its first attempt has no attempt row: its own row describes it."""
    if row.status != StepStatus.SUCCEEDED or row.kind not in (StepKind.TASK, StepKind.INLINE) \
            or row.started_at is None:
        return ()
    duration = row.finished_at - row.started_at if row.finished_at else None
    return (AttemptRecord(1, AttemptStatus.SUCCEEDED, None, None, None, row.worker, row.started_at, duration),)


class RunHandle:
    """A handle on one run, like Celery's ``AsyncResult``: ``id``, ``status``, ``result(timeout)``, ``cancel()``.

    ``operations`` is what :meth:`cancel` uses; without it the handle only reads.
    """

    def __init__(self, store: Store, run_id: str, operations: Operations | None = None) -> None:
        self._store = store
        self._operations = operations
        self.id = run_id

    def info(self) -> RunRecord:
        return load_run(self._store, self.id)

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``sleeping``, ``waiting``, ``succeeded``, ``failed`` or ``cancelled``."""
        return self.info().status

    def ready(self) -> bool:
        return self.status in FINISHED_RUN_STATUSES

    def steps(self) -> list[StepRecord]:
        """The journal of the run, in order, with each step's attempts."""
        return load_steps(self._store, self.id)

    def parent(self) -> RunHandle | None:
        """The run that started this one as a child (``ctx.start_child``), or None."""
        parent_id = self.info().parent_id
        return None if parent_id is None else RunHandle(self._store, parent_id, self._operations)

    def children(self) -> list[RunHandle]:
        """The child runs this run started, oldest first (a retried child step starts one per attempt)."""
        _, children = load_family(self._store, self.id)
        return [RunHandle(self._store, child.run_id, self._operations) for child in children]

    def cancel(self, reason: str = "cancelled by operator", *, terminate: bool = False) -> None:
        """Cancel the run and its child runs (see :meth:`Durable.cancel`).

        ``terminate=True`` also stops the task steps that are running now: they are journaled ``cancelled``
        and their workers terminate them (prefork pools)::

            run.cancel("customer left", terminate=True)
        """
        if self._operations is None:
            raise InvalidStateError(f"This handle on run {self.id} can only read; cancel it with "
                                    f"durable.cancel({self.id!r}) or durable.run({self.id!r}).cancel().")
        self._operations.cancel(self.id, reason, terminate=terminate)

    def result(self, timeout: float | None = None, interval: float = 0.05) -> Any:
        """Wait for the run to finish and return the workflow's result.

        Raises :class:`WorkflowFailedError` (with the journaled error) when the run failed,
        :class:`RunCancelledError` when it was cancelled, :class:`ResultTimeoutError` after ``timeout``.
        A database outage is waited out until ``timeout`` (or for a minute without one).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        outage_until = time.monotonic() + STORE_OUTAGE_TOLERANCE
        while True:
            try:
                info = self.info()
            except StoreUnavailableError:
                # A database restart kills pooled connections; keep waiting while it comes back.
                if time.monotonic() > (deadline if deadline is not None else outage_until):
                    raise
                time.sleep(max(interval, 0.5))
                continue
            outage_until = time.monotonic() + STORE_OUTAGE_TOLERANCE
            if info.status == RunStatus.SUCCEEDED:
                return info.result
            if info.status == RunStatus.FAILED:
                error = info.error or {}
                raise WorkflowFailedError(
                    f"Run {self.id} ({info.workflow}) failed: {error.get('type')}: "
                    f"{str(error.get('message')).rstrip('.')}. Fix the cause, then `durable runs resume {self.id}`.",
                    run_id=self.id, error=error)
            if info.status == RunStatus.CANCELLED:
                raise RunCancelledError(f"Run {self.id} ({info.workflow}) was cancelled.")
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(
                    f"Run {self.id} ({info.workflow}) is still {info.status} after {timeout}s. Are workers "
                    f"running (`celery -A <app> worker`)? `durable runs show {self.id}` lists its steps.")
            time.sleep(interval)

    get = result  # AsyncResult compatibility

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"
