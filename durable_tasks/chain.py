"""``durable.chain(...)``: a drop-in for ``celery.chain`` whose progress is journaled.

The chain keeps Celery's semantics: each result is passed as the first argument of the next signature,
``.si()`` signatures ignore it, partial arguments and options such as ``queue`` apply, a ``group`` inside
the chain runs its tasks in parallel and passes the list of their results on (a chord), and nested chains
are flattened. ``durable.sleep("1 hour")`` between signatures is a durable timer. The chain runs as the
built-in workflow :data:`CHAIN_WORKFLOW`, whose input is the encoded signatures.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from .canvas import CHAIN_WORKFLOW, ChainSleep, chain_label, encode, signature_of
from .errors import ConfigurationError
from .handle import RunHandle
from .joining import OnCommit
from .operations import Operations
from .runtime import Runtime
from .starting import start_run
from .workflow import WorkflowContext

__all__ = ["CHAIN_WORKFLOW", "ChainSleep", "DurableChain", "run_chain"]


class DurableChain:
    """A chain of signatures run as one durable run; start it like a Celery chain."""

    def __init__(self, runtime: Runtime, items: tuple[Any, ...], name: str | None = None) -> None:
        if not items:
            raise ConfigurationError("durable.chain() needs at least one signature.")
        self.runtime = runtime
        self.elements = [element for item in items for element in encode(runtime, item)]
        self.label = name or chain_label(self.elements)
        names = [task["task"] for element in self.elements for task in element.get("tasks", [element])
                 if "task" in task]
        self._tasks_known = all(name in runtime.app.tasks for name in names)

    def start(self, *args: Any, idempotency_key: str | None = None, connection: Connection | None = None,
              on_commit: OnCommit | None = None, **kwargs: Any) -> RunHandle:
        """Start the chain; ``args``/``kwargs`` go to the first signature (as ``chain.delay(...)`` does).

        ``connection`` (a SQLAlchemy ``Connection`` on the store's database) starts it inside the caller's
        transaction, as :meth:`Workflow.start <durable_tasks.Workflow.start>` does.
        """
        # A chain runs no user code in its coordinator, so when this process knows its tasks the run and
        # its first message commit together here, saving a broker hop; otherwise a worker advances it.
        workflow = self.runtime.registry.get(CHAIN_WORKFLOW)
        run_id = start_run(self.runtime, workflow, (self.elements, list(args), kwargs), {}, label=self.label,
                           idempotency_key=idempotency_key, advance_now=self._tasks_known, connection=connection,
                           on_commit=on_commit)
        return RunHandle(self.runtime.store, run_id, Operations(self.runtime.store, self.runtime.unit_of_work))

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None, *,
                    idempotency_key: str | None = None, connection: Connection | None = None,
                    on_commit: OnCommit | None = None, **options: Any) -> RunHandle:
        """Celery-style start; returns a :class:`RunHandle` (``.id``, ``.get(timeout)``, ``.status``)."""
        if options:
            raise ConfigurationError(
                f"durable.chain(...).apply_async() does not take {', '.join(sorted(options))}: set options "
                "on each signature (for example .set(queue='q'))."
            )
        return self.start(*(args or ()), idempotency_key=idempotency_key, connection=connection, on_commit=on_commit,
                          **(kwargs or {}))

    def delay(self, *args: Any, **kwargs: Any) -> RunHandle:
        return self.start(*args, **kwargs)

    __call__ = delay


def run_chain(ctx: WorkflowContext, elements: list[dict[str, Any]], args: list[Any] | None = None,
              kwargs: dict[str, Any] | None = None) -> Any:
    """The built-in workflow behind :class:`DurableChain`."""
    passed: list[Any] = list(args or ())  # the first signature's partial arguments, then the previous result
    extra = dict(kwargs or {})
    produced = False
    for element in elements:
        if element["type"] == "sleep":
            ctx.sleep("sleep", element["seconds"])
            continue
        if element["type"] == "group":
            futures = [ctx.run_async(signature_of(task), *passed, **extra) for task in element["tasks"]]
            result: Any = ctx.gather(*futures)
        else:
            result = ctx.run(signature_of(element), *passed, **extra)
        passed, extra, produced = [result], {}, True
    return passed[0] if produced else None
