"""What users declare: workflows (functions of ``ctx``) and the registry that finds them by name."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .errors import UnknownWorkflowError
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .app import Durable
    from .handle import RunHandle

P = ParamSpec("P")
R = TypeVar("R")


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A short hash of the function's source (bytecode when no source is available)."""
    try:
        material = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        material = code.co_code + repr(code.co_consts).encode() if code else repr(fn).encode()
    return hashlib.sha256(material).hexdigest()[:16]


class Workflow(Generic[P, R]):
    """A durable workflow: ``fn(ctx, *args, **kwargs)`` replayed from its journal.

    Created by :meth:`Durable.workflow`; start runs with :meth:`start`.
    """

    def __init__(
        self, durable: Durable, fn: Callable[..., R], name: str, retry: RetryPolicy | None
    ) -> None:
        self.durable = durable
        self.fn = fn
        self.name = name
        self.retry = retry
        self.fingerprint = code_fingerprint(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def start(self, *args: Any, idempotency_key: str | None = None, **kwargs: Any) -> RunHandle:
        """Start a run with these arguments (JSON values) and return its handle at once.

        With an ``idempotency_key``, starting again with the same key returns the existing run::

            run = checkout.start(42, idempotency_key="order-42")
            run.result(timeout=60)
        """
        return self.durable.start(self.name, *args, idempotency_key=idempotency_key, **kwargs)

    def run(self, *args: Any, idempotency_key: str | None = None, **kwargs: Any) -> RunHandle:
        """Start a run and execute it in this process right away, like calling the function directly.

        Inline steps run here and task steps are dispatched to workers; the call returns when the run
        finishes or first waits (on a task step, a sleep). If this process dies meanwhile, a worker
        resumes the run. ``run(...).result()`` returns at once for a workflow of inline steps.
        """
        return self.durable.start(self.name, *args, idempotency_key=idempotency_key, advance_now=True,
                                  **kwargs)

    def __repr__(self) -> str:
        return f"<Workflow {self.name}>"


@dataclass
class Registry:
    """Workflows and durable step tasks known to this process, by name."""

    workflows: dict[str, Workflow[Any, Any]] = field(default_factory=dict)

    def add(self, workflow: Workflow[Any, Any]) -> None:
        # Re-importing a module (autoreload, tests) defines the function again: the newest wins.
        self.workflows[workflow.name] = workflow

    def get(self, name: str) -> Workflow[Any, Any]:
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise UnknownWorkflowError(
                f"No workflow named {name!r} is registered in this process (registered: {known}). "
                "Import the module that defines it (for workers: Celery's `include`/`imports`)."
            ) from None
