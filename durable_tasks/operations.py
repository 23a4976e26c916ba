"""What an operator does to runs: resume, retry a step, cancel, fork, prune (API and ``durable runs``).

Each operation is one journaled transaction whose messages go through the outbox. From the CLI, which
may not reach the broker, those messages are left for the workers' relay, which sends them within a
second (``redelivery_after=0``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

from .errors import InvalidStateError, RunNotFoundError
from .outbox import UnitOfWork
from .store import queries
from .store.database import Store
from .store.schema import (
    ACTIVE_STATUSES,
    CANCELLED,
    FAILED,
    FINISHED_STATUSES,
    PENDING,
    RUNNING,
    STEP_CANCELLED,
    STEP_DISPATCHED,
    STEP_FAILED,
    STEP_RETRYING,
    STEP_SLEEPING,
    STEP_SUCCEEDED,
    SUCCEEDED,
)
from .transitions import record_attempt, redispatch, send_advance
from .workflow import MARKER, TASK

RESUMED = "resumed"


class Operations:
    """Operator actions on runs of one store."""

    def __init__(self, store: Store, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self.store = store
        self.unit_of_work = unit_of_work

    def _run(self, uow: UnitOfWork, run_id: str) -> Any:
        run = queries.get_run(uow.conn, run_id, lock=True)  # first, like every writer (no deadlock)
        if run is None:
            raise RunNotFoundError(f"No run with id {run_id!r} in the durable store at {self.store.redacted_url()}.")
        return run

    def resume(self, run_id: str) -> None:
        """Continue a ``failed`` run at the step that failed; finished steps stay finished.

        Run it after fixing the cause (code, data, an outside service). The step that parked the run, and
        any failed step after it (fan-out), gets a new attempt with a fresh retry budget; failed steps the
        workflow handled before that point stay as they are, so the replay takes the same path.
        """
        with self.unit_of_work() as uow:
            run = self._run(uow, run_id)
            if run.status != FAILED:
                raise InvalidStateError(
                    f"Run {run_id} is {run.status}; only failed runs can be resumed. "
                    + ("Use `durable runs retry-step` to skip a retry wait." if run.status in ACTIVE_STATUSES
                       else "Use `durable runs fork` to replay a finished run.")
                )
            journal = queries.load_journal(uow.conn, run_id).values()
            failed_key = (json.loads(run.error or "{}") or {}).get("step")
            parked_at = next((step.position for step in journal if step.step_key == failed_key), None)
            for step in journal:
                if step.status == STEP_FAILED and parked_at is not None and step.position >= parked_at:
                    self._restart_step(uow, step)
            queries.update_run(uow.conn, run_id, status=RUNNING, error=None, result=None, finished_at=None,
                               updated_at=time.time())
            send_advance(uow, run_id)

    def retry_step(self, run_id: str, step_key: str) -> None:
        """Run one step again now: a failed step (its run resumes) or one waiting out a retry backoff."""
        with self.unit_of_work() as uow:
            run = self._run(uow, run_id)
            step = queries.find_step(uow.conn, run_id, step_key)
            if step is None:
                keys = [row.step_key for row in queries.load_journal(uow.conn, run_id).values()]
                raise InvalidStateError(f"Run {run_id} has no step {step_key!r}; its steps are: {', '.join(keys)}.")
            if step.status not in (STEP_FAILED, STEP_RETRYING):
                raise InvalidStateError(
                    f"Step {step_key!r} of run {run_id} is {step.status}; only failed steps and steps waiting "
                    "to retry can be retried (a journaled result is never executed again)."
                )
            if run.status not in (FAILED, *ACTIVE_STATUSES):
                raise InvalidStateError(f"Run {run_id} is {run.status}; it cannot continue.")
            queries.cancel_timers(uow.conn, run_id, step.position, time.time())
            self._restart_step(uow, step)
            if run.status == FAILED:
                queries.update_run(uow.conn, run_id, status=RUNNING, error=None, finished_at=None,
                                   updated_at=time.time())
            send_advance(uow, run_id)

    def _restart_step(self, uow: UnitOfWork, step: Any) -> None:
        if step.kind == TASK and not step.request:
            # It failed before its message left (unknown task, bad arguments): the replay starts it afresh.
            queries.delete_step(uow.conn, step.run_id, step.position)
            return
        attempt = step.attempt + 1
        record_attempt(uow, step, attempt, status=RESUMED, worker=None, started_at=None)
        if step.kind == TASK:
            redispatch(uow, step, attempt)
        else:  # inline steps run again at the next replay
            queries.update_step(uow.conn, step.run_id, step.position, status=STEP_DISPATCHED, attempt=attempt,
                                error=None, finished_at=None)

    def cancel(self, run_id: str, reason: str = "cancelled by operator") -> None:
        """Cancel a run: nothing new starts; running steps see it through ``current_step().is_cancelled()``."""
        now = time.time()
        with self.unit_of_work() as uow:
            run = self._run(uow, run_id)
            if run.status in (SUCCEEDED, CANCELLED):
                raise InvalidStateError(f"Run {run_id} is {run.status}; there is nothing to cancel.")
            queries.cancel_timers(uow.conn, run_id, None, now)
            queries.delete_outbox_of(uow.conn, run_id)
            queries.cancel_pending_steps(uow.conn, run_id, (STEP_DISPATCHED, STEP_RETRYING, STEP_SLEEPING),
                                         STEP_CANCELLED, now)
            queries.update_run(uow.conn, run_id, status=CANCELLED, lease_owner=None, lease_until=None,
                               error=json.dumps({"type": "cancelled", "message": reason}), finished_at=now,
                               updated_at=now)

    def fork(self, run_id: str, from_step: str, fingerprint: str | None = None) -> str:
        """Start a new run of the same workflow and input that reuses the journal before ``from_step``.

        Replay after a fix: the steps before ``from_step`` keep their recorded results; ``from_step`` and
        everything after it run again, on the current code (``fingerprint`` records that code). Returns the
        new run's id.
        """
        now = time.time()
        with self.unit_of_work() as uow:
            run = self._run(uow, run_id)
            journal = queries.load_journal(uow.conn, run_id)
            start = next((row.position for row in journal.values() if row.step_key == from_step), None)
            if start is None:
                keys = ", ".join(row.step_key for _, row in sorted(journal.items()))
                raise InvalidStateError(f"Run {run_id} has no step {from_step!r}; its steps are: {keys}.")
            kept = [row for position, row in sorted(journal.items()) if position < start]
            unfinished = [row.step_key for row in kept if row.status != STEP_SUCCEEDED and row.kind != MARKER]
            if unfinished:
                raise InvalidStateError(
                    f"Run {run_id} cannot be forked from {from_step!r}: earlier steps have no result "
                    f"({', '.join(unfinished)}). Fork from the first of them."
                )
            new_id = str(uuid4())
            queries.insert_run(uow.conn, id=new_id, workflow=run.workflow, status=PENDING, input=run.input,
                               fingerprint=fingerprint or run.fingerprint, created_at=now, updated_at=now)
            for row in kept:
                values = {key: getattr(row, key) for key in row._fields if key != "run_id"}
                queries.insert_step(uow.conn, run_id=new_id, **values)
            send_advance(uow, new_id)
        return new_id

    def prune(self, older_than: float, status: str | None = None, batch: int = 500) -> int:
        """Delete finished runs (and their journals) that finished more than ``older_than`` seconds ago.

        Only ``succeeded``, ``failed`` and ``cancelled`` runs are ever deleted; returns how many.
        """
        statuses = (status,) if status else FINISHED_STATUSES
        if any(value not in FINISHED_STATUSES for value in statuses):
            raise InvalidStateError(
                f"prune deletes only finished runs ({', '.join(FINISHED_STATUSES)}), not {status!r}."
            )
        cutoff = time.time() - older_than
        deleted = 0
        while True:
            with self.store.begin() as conn:
                run_ids = queries.finished_runs_before(conn, cutoff, statuses, batch)
                if run_ids:
                    queries.delete_runs(conn, run_ids)
            deleted += len(run_ids)
            if len(run_ids) < batch:
                return deleted
