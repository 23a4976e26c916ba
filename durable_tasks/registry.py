"""The workflows this process knows, by name: what a coordinator looks up to replay a run."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UnknownWorkflowError
from .retry import RetryPolicy


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A short hash of the function's source (bytecode when no source is available)."""
    try:
        material = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        material = code.co_code + repr(code.co_consts).encode() if code else repr(fn).encode()
    return hashlib.sha256(material).hexdigest()[:16]


class WorkflowDefinition:
    """A workflow as the engine sees it: ``fn(ctx, *args, **kwargs)``, its name, default retry policy and
    a fingerprint of its code (recorded with each run).

    ``keeps_input``: the function never changes its arguments, so the coordinator decodes a run's input once
    and hands the same objects to every replay in this process (the built-in chain workflow; a user's
    workflow gets fresh arguments at every replay).
    """

    def __init__(self, fn: Callable[..., Any], name: str, retry: RetryPolicy | None, *,
                 keeps_input: bool = False) -> None:
        self.fn = fn
        self.name = name
        self.retry = retry
        self.keeps_input = keeps_input
        self.fingerprint = code_fingerprint(fn)

    def __repr__(self) -> str:
        return f"<Workflow {self.name}>"


@dataclass
class Registry:
    """The workflows registered in this process, by name (step tasks are found in the Celery app)."""

    workflows: dict[str, WorkflowDefinition] = field(default_factory=dict)

    def add(self, workflow: WorkflowDefinition) -> None:
        # Re-importing a module (autoreload, tests) defines the function again: the newest wins.
        self.workflows[workflow.name] = workflow

    def find(self, name: str) -> WorkflowDefinition | None:
        return self.workflows.get(name)

    def get(self, name: str) -> WorkflowDefinition:
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise UnknownWorkflowError(
                f"No workflow named {name!r} is registered in this process (registered: {known}). "
                "Import the module that defines it (for workers: Celery's `include`/`imports`)."
            ) from None


STEP_ATTRIBUTE = "__durable_step__"
"""The attribute ``@durable.step`` sets on a Celery task (or an inline step's function)."""


@dataclass(frozen=True)
class StepDefinition:
    """What ``@durable.step`` attached to a task or function: its retry policy (None: the workflow's)."""

    retry: RetryPolicy | None


def step_definition(target: Any) -> StepDefinition | None:
    """The :class:`StepDefinition` of a task or function, or None when it is not a durable step."""
    definition = getattr(target, STEP_ATTRIBUTE, None)
    return definition if isinstance(definition, StepDefinition) else None
