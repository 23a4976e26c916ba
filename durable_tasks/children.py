"""Child runs (``ctx.start_child``): their derived ids, and how a child's end reads in its parent's journal.

A child is a run of its own, journaled in its parent as a ``child`` step. Its id is derived from the parent's
run id, the step key and the attempt, so a replayed parent finds its child instead of starting another one,
and each retry of the step starts a new child with an id of its own. The writes live in
:mod:`durable_tasks.transitions` (:func:`~durable_tasks.transitions.start_child`, and the settling of the
parent's step when a child finishes); nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID, uuid5

from .attempts import GIVE_UP, NextAttempt, after_failure
from .errors import StepFailedError
from .retry import RetryPolicy
from .serialization import loads
from .vocabulary import RunStatus

_CHILD_IDS = UUID("5f0c2b8e-6d1a-4c3e-9a57-2b8d0e4f7a11")


def child_run_id(parent_id: str, step_key: str, attempt: int) -> str:
    """The id of the child run that attempt ``attempt`` of the parent's step ``step_key`` starts::

        child_run_id("0b6c...", "shop.ship_parcel", 1)  # the same id on every replay of the parent
    """
    return str(uuid5(_CHILD_IDS, f"{parent_id}/{step_key}/{attempt}"))


def child_failure(child_id: str, workflow: str, status: str, error: str | None, *, step_key: str,
                  attempt: int) -> dict[str, Any]:
    """The error a failed or cancelled child leaves on its parent's step: the child's own error type, and a
    message that names the child run (``durable runs show`` it for its journal)."""
    cause = loads(error) or {}
    what = "was cancelled" if status == RunStatus.CANCELLED else "failed"
    return {"type": str(cause.get("type") or status), "step": step_key, "attempt": attempt, "child": child_id,
            "message": f"child run {child_id} ({workflow}) {what}: {cause.get('message')}"}


def after_child_failure(request: str | None, attempts_used: int, status: str, failure: dict[str, Any]) -> NextAttempt:
    """What follows a child's end for its parent's step: the step's retry policy (the parent workflow's
    ``retry``, kept in the step's request) for a failed child; never a retry for a cancelled one, since a cancel
    is deliberate. The policy sees a :class:`~durable_tasks.StepFailedError` carrying the child's error type."""
    if status != RunStatus.FAILED:
        return GIVE_UP
    policy = RetryPolicy.from_json((loads(request) or {}).get("retry"))
    error = StepFailedError(failure["message"], step_key=failure["step"], error_type=failure["type"],
                            error_message=failure["message"])
    return after_failure(policy, attempts_used, error)


def cancel_request(parent_id: str, error: Mapping[str, Any]) -> dict[str, Any]:
    """What a cancelled parent (its journaled ``error``) asks of each of its children: to cancel, with the
    parent's reason and its ``terminate``."""
    return {"reason": f"its parent run {parent_id} was cancelled: {error.get('message')}",
            "terminate": bool(error.get("terminate"))}
