"""``durable.chain(...)``: a drop-in for ``celery.chain`` whose progress is journaled.

The chain keeps Celery's semantics: each result is passed as the first argument of the next signature,
``.si()`` signatures ignore it, partial arguments and options such as ``queue`` apply, a ``group`` inside
the chain runs its tasks in parallel and passes the list of their results on (a chord), and nested chains
are flattened. ``durable.sleep("1 hour")`` between signatures is a durable timer. The chain runs as the
built-in workflow :data:`CHAIN_WORKFLOW`, whose input is the encoded signatures.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.canvas import Signature, _chain, chord, group

from .durations import describe, parse_duration
from .errors import ConfigurationError
from .handle import RunHandle
from .registry import step_definition
from .runtime import Runtime
from .starting import start_run
from .workflow import WorkflowContext

CHAIN_WORKFLOW = "durable_tasks.chain"

PASSED_OPTIONS = frozenset({"queue", "routing_key", "exchange", "priority", "time_limit", "soft_time_limit",
                            "step_key"})
REFUSED_OPTIONS = {
    "countdown": "put durable.sleep(...) before the signature instead",
    "eta": "put durable.sleep(...) before the signature instead",
    "link": "add the callback as the next signature of the chain",
    "link_error": "handle failures with the step's retry policy; a failed run is parked for `resume`",
}


class ChainSleep:
    """A durable pause between two signatures of a durable chain; the previous result passes through."""

    def __init__(self, duration: float | str | timedelta) -> None:
        self.seconds = parse_duration(duration)

    def __repr__(self) -> str:
        return f"durable.sleep({self.seconds}s)"


class DurableChain:
    """A chain of signatures run as one durable run; start it like a Celery chain."""

    def __init__(self, runtime: Runtime, items: tuple[Any, ...]) -> None:
        if not items:
            raise ConfigurationError("durable.chain() needs at least one signature.")
        self.runtime = runtime
        self.elements = [element for item in items for element in _encode(runtime, item)]
        names = [task["task"] for element in self.elements for task in element.get("tasks", [element])
                 if "task" in task]
        self._tasks_known = all(name in runtime.app.tasks for name in names)

    def start(self, *args: Any, idempotency_key: str | None = None, **kwargs: Any) -> RunHandle:
        """Start the chain; ``args``/``kwargs`` go to the first signature (as ``chain.delay(...)`` does)."""
        # A chain runs no user code in its coordinator, so when this process knows its tasks the run and
        # its first message commit together here, saving a broker hop; otherwise a worker advances it.
        run_id = start_run(self.runtime, self.runtime.registry.get(CHAIN_WORKFLOW), (self.elements, list(args), kwargs),
                           {}, idempotency_key=idempotency_key, advance_now=self._tasks_known)
        return RunHandle(self.runtime.store, run_id)

    def apply_async(self, args: Any = None, kwargs: dict[str, Any] | None = None, *,
                    idempotency_key: str | None = None, **options: Any) -> RunHandle:
        """Celery-style start; returns a :class:`RunHandle` (``.id``, ``.get(timeout)``, ``.status``)."""
        if options:
            raise ConfigurationError(
                f"durable.chain(...).apply_async() does not take {', '.join(sorted(options))}: set options "
                "on each signature (for example .set(queue='q'))."
            )
        return self.start(*(args or ()), idempotency_key=idempotency_key, **(kwargs or {}))

    def delay(self, *args: Any, **kwargs: Any) -> RunHandle:
        return self.start(*args, **kwargs)

    __call__ = delay


def _encode(runtime: Runtime, item: Any) -> list[dict[str, Any]]:
    if isinstance(item, ChainSleep):
        if item.seconds > runtime.settings.max_sleep:
            raise ConfigurationError(
                f"{item!r} in durable.chain() is {describe(item.seconds)}, longer than max_sleep "
                f"({describe(runtime.settings.max_sleep)}). Check the unit; to allow it, raise the setting: "
                "Durable(app, max_sleep='800 days') or app.conf.durable_max_sleep.")
        return [{"type": "sleep", "seconds": item.seconds}]
    if isinstance(item, _chain):
        return [element for task in item.tasks for element in _encode(runtime, task)]
    if isinstance(item, chord):
        return [_encode_group(runtime, item.tasks), *_encode(runtime, item.body)]
    if isinstance(item, group):
        return [_encode_group(runtime, item.tasks)]
    if isinstance(item, Signature):
        return [_encode_signature(runtime, item)]
    if hasattr(item, "s") and hasattr(item, "name"):
        return [_encode_signature(runtime, item.s())]
    raise ConfigurationError(f"durable.chain() takes signatures, groups, chains and durable.sleep(), not {item!r}.")


def _encode_group(runtime: Runtime, tasks: Any) -> dict[str, Any]:
    encoded = [_encode_signature(runtime, task) for task in tasks]
    return {"type": "group", "tasks": encoded}


def _encode_signature(runtime: Runtime, signature: Any) -> dict[str, Any]:
    if not isinstance(signature, Signature) or isinstance(signature, _chain | group):
        raise ConfigurationError(f"A group in a durable chain takes plain signatures, not {signature!r}.")
    for option, advice in REFUSED_OPTIONS.items():
        if signature.options.get(option):
            raise ConfigurationError(f"Signature {signature.task} sets {option!r}, which a durable chain does not "
                                     f"support: {advice}.")
    task = runtime.app.tasks.get(signature.task)
    if task is not None and step_definition(task) is None:
        raise ConfigurationError(
            f"Task {signature.task!r} is not a durable step, so its result could not be journaled. "
            "Decorate it with @durable.step (above @app.task)."
        )
    return {
        "type": "task", "task": signature.task, "args": list(signature.args), "kwargs": dict(signature.kwargs),
        "options": {key: value for key, value in signature.options.items() if key in PASSED_OPTIONS},
        "immutable": bool(signature.immutable),
    }


def _signature(element: dict[str, Any]) -> Signature:
    return Signature(element["task"], element["args"], element["kwargs"], dict(element["options"]),
                     immutable=element["immutable"])


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
            futures = [ctx.run_async(_signature(task), *passed, **extra) for task in element["tasks"]]
            result: Any = ctx.gather(*futures)
        else:
            result = ctx.run(_signature(element), *passed, **extra)
        passed, extra, produced = [result], {}, True
    return passed[0] if produced else None
