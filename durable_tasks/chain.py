"""``durable.chain(...)``: a drop-in for ``celery.chain`` whose progress is journaled.

The chain keeps Celery's semantics: each result is passed as the first argument of the next signature,
``.si()`` signatures ignore it, partial arguments and options such as ``queue`` apply, a ``group`` inside
the chain runs its tasks in parallel and passes the list of their results on (a chord), and nested chains
are flattened. ``durable.sleep("1 hour")`` between signatures is a durable timer. The chain runs as the
built-in workflow :data:`CHAIN_WORKFLOW`, whose input is the encoded signatures.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from sqlalchemy import Connection

from .canvas import CHAIN_WORKFLOW, ChainSleep, chain_label, encode, signature_of
from .errors import ConfigurationError
from .handle import RunHandle
from .joining import OnCommit
from .operations import Operations
from .runtime import Runtime
from .serialization import loads
from .starting import start_run
from .vocabulary import StepStatus
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
    start, previous = _resume(ctx, elements)
    if previous is not None:
        passed, extra, produced = [_result_of(ctx, elements, previous)], {}, True
    for element in islice(elements, start, None):
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


class _Layout:
    """Where each element of a chain sits in the journal: its first position and its steps' names."""

    __slots__ = ("counts", "done", "firsts", "names")

    def __init__(self, elements: list[dict[str, Any]]) -> None:
        self.firsts: list[int] = []
        self.names: list[list[str]] = []
        position = 0
        for element in elements:
            tasks = element["tasks"] if element["type"] == "group" else [element]
            names = ["sleep" if task["type"] == "sleep" else task["options"].get("step_key") or task["task"]
                     for task in tasks]
            self.firsts.append(position)
            self.names.append(names)
            position += len(names)
        self.done = 0  # elements known to be finished, and the step names' call counts before the next one
        self.counts: dict[str, int] = {}


def _resume(ctx: WorkflowContext, elements: list[dict[str, Any]]) -> tuple[int, int | None]:
    """Skip the elements whose steps all succeeded: (the first one to replay, the last one that produced a
    result before it, or None).

    The layout is kept with the run's journal (``ctx._memo``), which a coordinator reads again in full, with a
    fresh memo, whenever a finished step may have changed; so the elements found done stay done.
    """
    layout = ctx._memo.get("chain")
    if layout is None:
        layout = ctx._memo["chain"] = _Layout(elements)
    while layout.done < len(elements):
        first, names = layout.firsts[layout.done], layout.names[layout.done]
        rows = [ctx._journaled(position) for position in range(first, first + len(names))]
        if not all(row is not None and row.status == StepStatus.SUCCEEDED for row in rows):
            break
        for name in names:
            layout.counts[name] = layout.counts.get(name, 0) + 1
        layout.done += 1
    if layout.done == 0:
        return 0, None
    ctx._seek(layout.firsts[layout.done] if layout.done < len(elements) else sum(map(len, layout.names)),
              layout.counts)
    previous = next((index for index in range(layout.done - 1, -1, -1) if elements[index]["type"] != "sleep"), None)
    return layout.done, previous


def _result_of(ctx: WorkflowContext, elements: list[dict[str, Any]], index: int) -> Any:
    """The result a finished element passes on: its task's, or the list of its group's."""
    layout: _Layout = ctx._memo["chain"]
    first = layout.firsts[index]
    values = [loads(row.result) for position in range(first, first + len(layout.names[index]))
              if (row := ctx._journaled(position)) is not None]
    return values if elements[index]["type"] == "group" else values[0]
