"""Test your workflows without a broker or database: :func:`run_eagerly` runs one in memory.

Task steps call the task's body in this process, inline steps run, sleeps end at once (their durations
are recorded), and every result goes through the same JSON encoding as a real run, so an unserialisable
result fails here too. Retry policies are applied without waiting. Step keys, ``ctx.patched`` and
``ctx.gather`` behave as in a real run::

    from durable_tasks.testing import run_eagerly

    def test_checkout():
        outcome = run_eagerly(checkout, 42)
        assert outcome.result["approved"]
        assert outcome.step_keys == ["tasks.charge_card", "summarise", "cool-off"]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from .current import StepInfo, running_step
from .definitions import Workflow
from .errors import ConfigurationError, UnknownTaskError
from .retry import NO_RETRY, RetryPolicy
from .serialization import dumps, loads
from .store.schema import STEP_FAILED, STEP_SUCCEEDED
from .transitions import StepRow, error_record
from .workflow import INLINE, MARKER, SLEEP, TASK, WorkflowContext

__all__ = ["EagerOutcome", "run_eagerly"]


@dataclass
class EagerOutcome:
    """What :func:`run_eagerly` saw: the result, the journal it would have written, the sleeps."""

    result: Any
    journal: list[StepRow] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)

    @property
    def step_keys(self) -> list[str]:
        return [row.step_key for row in self.journal]


class _EagerWriter:
    def __init__(self, workflow: Workflow[Any, Any], run_id: str, outcome: EagerOutcome) -> None:
        self.workflow = workflow
        self.run_id = run_id
        self.outcome = outcome

    def _attempts(self, position: int, step_key: str, kind: str, name: str, policy: RetryPolicy,
                  call: Callable[[], Any]) -> StepRow:
        attempt = 1
        while True:
            try:
                with running_step(StepInfo(self.run_id, step_key, position, attempt)):
                    value = call()
                text = dumps(value, what=f"result of step {step_key!r} in run {self.run_id}")
            except Exception as exc:
                if policy.should_retry(attempt, exc):
                    attempt += 1
                    continue
                error = json.dumps(error_record(exc, step_key=step_key, attempt=attempt))
                return self._journal(StepRow(self.run_id, position, step_key, kind, name, STEP_FAILED, attempt,
                                             error=error))
            return self._journal(StepRow(self.run_id, position, step_key, kind, name, STEP_SUCCEEDED, attempt,
                                         result=text))

    def _journal(self, row: StepRow) -> StepRow:
        self.outcome.journal.append(row)
        return row

    def dispatch_task(self, position: int, step_key: str, name: str, request: dict[str, Any]) -> Any:
        task = self.workflow.durable.app.tasks.get(name)
        if task is None:
            raise UnknownTaskError(f"Step {step_key!r} asks for Celery task {name!r}, which is not registered.")
        definition = getattr(task, "__durable_step__", None)
        if definition is None:
            raise ConfigurationError(f"Celery task {name!r} is not a durable step: decorate it with @durable.step.")
        args, kwargs = loads(dumps(request["args"], what="arguments")), request["kwargs"]
        policy = definition.retry or self.workflow.retry or NO_RETRY
        return self._attempts(position, step_key, TASK, name, policy, lambda: task.run(*args, **kwargs))

    def run_inline(self, position: int, step_key: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], row: Any) -> Any:
        policy = getattr(fn, "__durable_retry__", None) or self.workflow.retry or NO_RETRY
        name = getattr(fn, "__name__", step_key)
        return self._attempts(position, step_key, INLINE, name, policy, lambda: fn(*args, **kwargs))

    def start_sleep(self, position: int, step_key: str, seconds: float) -> Any:
        self.outcome.slept.append(seconds)
        return self._journal(StepRow(self.run_id, position, step_key, SLEEP, step_key, STEP_SUCCEEDED,
                                     result="null"))

    def record_marker(self, position: int, step_key: str) -> Any:
        return self._journal(StepRow(self.run_id, position, step_key, MARKER, step_key, STEP_SUCCEEDED,
                                     result="true"))


def run_eagerly(workflow: Workflow[Any, Any], *args: Any, **kwargs: Any) -> EagerOutcome:
    """Run ``workflow(*args, **kwargs)`` in memory and return its :class:`EagerOutcome`.

    A step that fails for good raises :class:`~durable_tasks.StepFailedError` out of this call, as it
    would park a real run.
    """
    outcome = EagerOutcome(result=None)
    run_id = f"eager-{uuid4().hex[:8]}"
    writer = _EagerWriter(workflow, run_id, outcome)
    ctx = WorkflowContext(run_id, workflow.name, {}, writer)
    call = loads(dumps({"args": list(args), "kwargs": kwargs}, what=f"input of workflow {workflow.name!r}"))
    value = workflow.fn(ctx, *call["args"], **call["kwargs"])
    outcome.result = loads(dumps(value, what=f"result of workflow {workflow.name!r}"))
    return outcome
