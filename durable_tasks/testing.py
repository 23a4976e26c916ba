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

from .attempts import after_failure, error_record
from .chain import CHAIN_WORKFLOW, DurableChain
from .current import StepInfo, running_step
from .definitions import Workflow
from .records import StepRow, WrittenStep
from .registry import WorkflowDefinition, step_definition
from .retry import NO_RETRY, RetryPolicy
from .runtime import Runtime
from .serialization import dumps, loads
from .vocabulary import StepKind, StepStatus
from .workflow import WorkflowContext

__all__ = ["EagerOutcome", "run_eagerly"]


@dataclass
class EagerOutcome:
    """What :func:`run_eagerly` saw: the result, the journal it would have written, the sleeps."""

    result: Any
    journal: list[WrittenStep] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)

    @property
    def step_keys(self) -> list[str]:
        return [row.step_key for row in self.journal]


class _EagerWriter:
    def __init__(self, runtime: Runtime, workflow: WorkflowDefinition, run_id: str, outcome: EagerOutcome) -> None:
        self.runtime = runtime
        self.workflow = workflow
        self.run_id = run_id
        self.outcome = outcome

    def _attempts(self, position: int, step_key: str, kind: StepKind, name: str, policy: RetryPolicy,
                  call: Callable[[], Any]) -> StepRow:
        attempt = 1
        while True:
            try:
                with running_step(StepInfo(self.run_id, step_key, position, attempt)):
                    value = call()
                text = dumps(value, what=f"result of step {step_key!r} in run {self.run_id}")
            except Exception as exc:
                if after_failure(policy, attempt, exc).retry:  # the same decision as a real run, without the wait
                    attempt += 1
                    continue
                error = json.dumps(error_record(exc, step_key=step_key, attempt=attempt))
                return self._journal(WrittenStep(self.run_id, position, step_key, kind, name, StepStatus.FAILED,
                                                 attempt, error=error))
            return self._journal(WrittenStep(self.run_id, position, step_key, kind, name, StepStatus.SUCCEEDED,
                                             attempt, result=text))

    def _journal(self, row: WrittenStep) -> WrittenStep:
        self.outcome.journal.append(row)
        return row

    def dispatch_task(self, position: int, step_key: str, name: str, call: dict[str, Any]) -> StepRow:
        task, definition = self.runtime.step_task(name, step_key=step_key, run_id=self.run_id)
        args, kwargs = loads(dumps(call["args"], what="arguments")), call["kwargs"]
        policy = definition.retry or self.workflow.retry or NO_RETRY
        return self._attempts(position, step_key, StepKind.TASK, name, policy, lambda: task.run(*args, **kwargs))

    def run_inline(self, position: int, step_key: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], row: StepRow | None) -> StepRow:
        definition = step_definition(fn)
        policy = (definition.retry if definition else None) or self.workflow.retry or NO_RETRY
        name = getattr(fn, "__name__", step_key)
        return self._attempts(position, step_key, StepKind.INLINE, name, policy, lambda: fn(*args, **kwargs))

    def start_sleep(self, position: int, step_key: str, seconds: float) -> StepRow:
        self.outcome.slept.append(seconds)
        return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.SLEEP, step_key,
                                         StepStatus.SUCCEEDED, result="null"))

    def record_marker(self, position: int, step_key: str) -> StepRow:
        return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.MARKER, step_key,
                                         StepStatus.SUCCEEDED, result="true"))


def run_eagerly(target: Workflow[Any, Any] | DurableChain, *args: Any, **kwargs: Any) -> EagerOutcome:
    """Run a workflow, ``workflow(*args, **kwargs)``, or a durable chain in memory; return its :class:`EagerOutcome`.

    A chain's ``args``/``kwargs`` go to its first signature, as with ``chain.delay(...)``::

        outcome = run_eagerly(durable.chain(charge_card.s(42), send_receipt.s()))

    A step that fails for good raises :class:`~durable_tasks.StepFailedError` out of this call, as it
    would park a real run.
    """
    if isinstance(target, DurableChain):
        workflow = target.runtime.registry.get(CHAIN_WORKFLOW)
        args, kwargs = (target.elements, list(args), kwargs), {}
    else:
        workflow = target
    outcome = EagerOutcome(result=None)
    run_id = f"eager-{uuid4().hex[:8]}"
    writer = _EagerWriter(target.runtime, workflow, run_id, outcome)
    ctx = WorkflowContext(run_id, workflow.name, {}, writer)
    call = loads(dumps({"args": list(args), "kwargs": kwargs}, what=f"input of workflow {workflow.name!r}"))
    value = workflow.fn(ctx, *call["args"], **call["kwargs"])
    outcome.result = loads(dumps(value, what=f"result of workflow {workflow.name!r}"))
    return outcome
