"""What an operator does to runs: resume, retry a step, cancel, fork, prune (API and ``durable runs``).

Each operation is one journaled transaction whose messages go through the outbox. From the CLI, which
may not reach the broker, those messages are left for the workers' relay, which sends them within a
second (``redelivery_after=0``).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence

from . import transitions
from .errors import InvalidStateError, RunNotFoundError
from .outbox import UnitOfWork
from .records import RunRow, StepRow
from .store import queries, retention_queries
from .store.database import Store
from .vocabulary import ACTIVE_RUN_STATUSES, FINISHED_RUN_STATUSES, RunStatus, StepKind, StepStatus


class Operations:
    """Operator actions on runs of one store."""

    def __init__(self, store: Store, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self.store = store
        self.unit_of_work = unit_of_work

    def _run(self, uow: UnitOfWork, run_id: str) -> RunRow:
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
            _refuse_reopening_a_child(uow, run)
            journal = queries.load_journal(uow.conn, run_id).values()
            if run.status != RunStatus.FAILED:
                raise InvalidStateError(f"Run {run_id} is {run.status}; only failed runs can be resumed. "
                                        + _instead_of_resume(run, list(journal)))
            failed_key = (json.loads(run.error or "{}") or {}).get("step")
            parked_at = next((step.position for step in journal if step.step_key == failed_key), None)
            restart = [step for step in journal
                       if step.status == StepStatus.FAILED and parked_at is not None and step.position >= parked_at]
            transitions.reopen_run(uow, run, restart=restart)

    def retry_step(self, run_id: str, step_key: str) -> None:
        """Run one step again now: a failed step (its run resumes) or one waiting out a retry backoff."""
        with self.unit_of_work() as uow:
            run = self._run(uow, run_id)
            step = queries.find_step(uow.conn, run_id, step_key)
            if step is None:
                keys = [row.step_key for row in queries.load_journal(uow.conn, run_id).values()]
                raise InvalidStateError(f"Run {run_id} has no step {step_key!r}; its steps are: {', '.join(keys)}.")
            if step.status not in (StepStatus.FAILED, StepStatus.RETRYING):
                raise InvalidStateError(
                    f"Step {step_key!r} of run {run_id} is {step.status}; only failed steps and steps waiting "
                    "to retry can be retried (a journaled result is never executed again)."
                )
            if run.status not in (RunStatus.FAILED, *ACTIVE_RUN_STATUSES):
                raise InvalidStateError(f"Run {run_id} is {run.status}; it cannot continue.")
            if run.status == RunStatus.FAILED:
                _refuse_reopening_a_child(uow, run)
                transitions.reopen_run(uow, run, restart=[step])
            else:
                transitions.restart_step(uow, step)
                uow.send_advance(run_id)

    def cancel(self, run_id: str, reason: str = "cancelled by operator", *, terminate: bool = False) -> None:
        """Cancel a run and its child runs: nothing new starts; running steps see it through
        ``current_step().is_cancelled()``.

        With ``terminate`` the running task steps are journaled ``cancelled`` and the workers that run them
        terminate them (a revoke with terminate, on pools that support it: prefork).
        """
        with self.unit_of_work() as uow:
            run = self._run(uow, run_id)
            if run.status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED):
                raise InvalidStateError(f"Run {run_id} is {run.status}; there is nothing to cancel.")
            transitions.cancel_run(uow, run, reason, terminate=terminate)

    def fork(self, run_id: str, from_step: str, fingerprint: str | None = None) -> str:
        """Start a new run of the same workflow and input that reuses the journal before ``from_step``.

        Replay after a fix: the steps before ``from_step`` keep their recorded results; ``from_step`` and
        everything after it run again, on the current code (``fingerprint`` records that code). Returns the
        new run's id.
        """
        with self.unit_of_work() as uow:
            run = self._run(uow, run_id)
            journal = queries.load_journal(uow.conn, run_id)
            start = next((row.position for row in journal.values() if row.step_key == from_step), None)
            if start is None:
                keys = ", ".join(row.step_key for _, row in sorted(journal.items()))
                raise InvalidStateError(f"Run {run_id} has no step {from_step!r}; its steps are: {keys}.")
            kept = [row for position, row in sorted(journal.items()) if position < start]
            unfinished = [row.step_key for row in kept
                          if row.status != StepStatus.SUCCEEDED and row.kind != StepKind.MARKER]
            if unfinished:
                raise InvalidStateError(
                    f"Run {run_id} cannot be forked from {from_step!r}: earlier steps have no result "
                    f"({', '.join(unfinished)}). Fork from the first of them."
                )
            return transitions.fork_run(uow, run, start, fingerprint or run.fingerprint)

    def prune(self, older_than: float, status: str | None = None, batch: int = 500) -> int:
        """Delete finished runs (and their journals) that finished more than ``older_than`` seconds ago.

        Only ``succeeded``, ``failed`` and ``cancelled`` runs are ever deleted; returns how many.
        """
        statuses, cutoff = _prune_filter(older_than, status)
        deleted = 0
        while True:
            deleted += (count := prune_batch(self.store, cutoff, statuses, batch))
            if count < batch:
                return deleted

    def prunable(self, older_than: float, status: str | None = None, limit: int = 1000) -> list[str]:
        """The ids of the runs :meth:`prune` would delete (``durable runs prune --dry-run``), oldest first."""
        statuses, cutoff = _prune_filter(older_than, status)
        with self.store.read() as conn:
            return retention_queries.finished_runs_before(conn, cutoff, statuses, limit)


def prune_batch(store: Store, cutoff: float, statuses: Sequence[str], batch: int) -> int:
    """Delete up to ``batch`` runs in ``statuses`` that finished before ``cutoff``, in one transaction."""
    with store.begin() as conn:
        run_ids = retention_queries.finished_runs_before(conn, cutoff, statuses, batch)
        if run_ids:
            retention_queries.delete_runs(conn, run_ids)
    return len(run_ids)


def _prune_filter(older_than: float, status: str | None) -> tuple[tuple[str, ...], float]:
    statuses = (status,) if status else tuple(FINISHED_RUN_STATUSES)
    if any(value not in FINISHED_RUN_STATUSES for value in statuses):
        raise InvalidStateError(
            f"prune deletes only finished runs ({', '.join(FINISHED_RUN_STATUSES)}), not {status!r}."
        )
    return statuses, time.time() - older_than


def _refuse_reopening_a_child(uow: UnitOfWork, run: RunRow) -> None:
    """A finished child is not reopened on its own: its parent's step already took its failure. The parent's
    step starts it again, as a new child run."""
    if run.parent_id is None or run.parent_position is None:
        return
    step = queries.get_step(uow.conn, run.parent_id, run.parent_position)
    key = shlex.quote(step.step_key) if step is not None else "STEP"
    raise InvalidStateError(
        f"Run {run.id} is a child run of {run.parent_id}, whose step {key} has already taken its failure. Run "
        f"that step again instead, which starts the child anew: `durable runs retry-step {run.parent_id} {key}`.")


def _instead_of_resume(run: RunRow, journal: list[StepRow]) -> str:
    """What to run instead of ``resume`` on a run that is not failed, as a command to paste."""
    if run.status in ACTIVE_RUN_STATUSES:
        waiting = [step.step_key for step in journal if step.status == StepStatus.RETRYING]
        if not waiting:
            return "It is still going; nothing to resume."
        return f"To skip a retry wait: `durable runs retry-step {run.id} {shlex.quote(waiting[0])}`."
    if not journal:
        return "It has no steps to replay."
    first = min(journal, key=lambda step: step.position).step_key
    return f"To replay it as a new run: `durable runs fork {run.id} --from-step {shlex.quote(first)}`."
