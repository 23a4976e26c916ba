"""What users declare: a workflow, a function of ``ctx`` that they start by name or by object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

from sqlalchemy import Connection

from .handle import RunHandle
from .joining import OnCommit
from .operations import Operations
from .registry import WorkflowDefinition
from .retry import RetryPolicy
from .runtime import Runtime
from .starting import start_run

P = ParamSpec("P")
R = TypeVar("R")


class Workflow(WorkflowDefinition, Generic[P, R]):
    """A durable workflow: ``fn(ctx, *args, **kwargs)`` replayed from its journal.

    Created by :meth:`Durable.workflow`; start runs with :meth:`start`.
    """

    def __init__(self, runtime: Runtime, fn: Callable[..., R], name: str, retry: RetryPolicy | None) -> None:
        super().__init__(fn, name, retry)
        self.runtime = runtime
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def start(self, *args: Any, idempotency_key: str | None = None, connection: Connection | None = None,
              on_commit: OnCommit | None = None, **kwargs: Any) -> RunHandle:
        """Start a run with these arguments (JSON values) and return its handle at once.

        With an ``idempotency_key``, starting again with the same key and arguments returns the existing
        run (other arguments raise :class:`~durable_tasks.IdempotencyConflictError`)::

            run = checkout.start(42, idempotency_key="order-42")
            run.result(timeout=60)

        With ``connection``, a SQLAlchemy ``Connection`` on the store's database, the run is written in the
        transaction open on it and starts only if that transaction commits; its first message leaves after the
        commit (``on_commit`` registers the publish elsewhere, such as Django's ``transaction.on_commit``)::

            with engine.begin() as conn:
                conn.execute(orders.insert().values(id=42))
                checkout.start(42, connection=conn)  # no order, no run; an order, its run
        """
        run_id = start_run(self.runtime, self, args, kwargs, idempotency_key=idempotency_key, connection=connection,
                           on_commit=on_commit)
        return RunHandle(self.runtime.store, run_id, Operations(self.runtime.store, self.runtime.unit_of_work))

    def run(self, *args: Any, idempotency_key: str | None = None, **kwargs: Any) -> RunHandle:
        """Start a run and execute it in this process right away, like calling the function directly.

        Inline steps run here and task steps are dispatched to workers; the call returns when the run
        finishes or first waits (on a task step, a sleep). If this process dies meanwhile, a worker
        resumes the run. ``run(...).result()`` returns at once for a workflow of inline steps.
        """
        run_id = start_run(self.runtime, self, args, kwargs, idempotency_key=idempotency_key, advance_now=True)
        return RunHandle(self.runtime.store, run_id, Operations(self.runtime.store, self.runtime.unit_of_work))
