"""Celery canvas (signatures, chains, groups, chords) as the JSON elements a durable chain journals.

A durable chain's input is ``[elements, args, kwargs]``: ``elements`` are the encoded signatures (``task``),
groups (``group``) and durable pauses (``sleep``); ``args``/``kwargs`` go to the first signature, as with
``chain.delay(...)``. This module encodes them, decodes them back into signatures, and describes them for
operators (:func:`chain_label`, :func:`first_call`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.canvas import Signature, _chain, chord, group

from .durations import describe, parse_duration
from .errors import ConfigurationError
from .registry import step_definition
from .runtime import Runtime

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


def encode(runtime: Runtime, item: Any) -> list[dict[str, Any]]:
    if isinstance(item, ChainSleep):
        if item.seconds > runtime.settings.max_sleep:
            raise ConfigurationError(
                f"{item!r} in durable.chain() is {describe(item.seconds)}, longer than max_sleep "
                f"({describe(runtime.settings.max_sleep)}). Check the unit; to allow it, raise the setting: "
                "Durable(app, max_sleep='800 days') or app.conf.durable_max_sleep.")
        return [{"type": "sleep", "seconds": item.seconds}]
    if isinstance(item, _chain):
        return [element for task in item.tasks for element in encode(runtime, task)]
    if isinstance(item, chord):
        return [_encode_group(runtime, item.tasks), *encode(runtime, item.body)]
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


def signature_of(element: dict[str, Any]) -> Signature:
    return Signature(element["task"], element["args"], element["kwargs"], dict(element["options"]),
                     immutable=element["immutable"])



def chain_label(elements: list[dict[str, Any]], limit: int = 255) -> str:
    """A chain as operators read it: ``shop.charge_card → shop.send_receipt`` (groups in brackets)."""
    parts = []
    for element in elements:
        if element["type"] == "task":
            parts.append(element["task"])
        elif element["type"] == "group":
            parts.append("[" + " | ".join(task["task"] for task in element["tasks"]) + "]")
        else:
            parts.append(f"sleep {element['seconds']:g}s")
    label = " → ".join(parts)
    return label if len(label) <= limit else label[: limit - 1] + "…"


def first_call(elements: list[dict[str, Any]], args: list[Any], kwargs: dict[str, Any]
               ) -> tuple[list[Any], dict[str, Any]]:
    """The arguments the chain's first task is called with (its own partial arguments merged as Celery does)."""
    first = next((element for element in elements if element["type"] != "sleep"), None)
    if first is None or first["type"] != "task":
        return list(args), dict(kwargs)
    if first["immutable"]:
        return list(first["args"]), dict(first["kwargs"])
    return [*args, *first["args"]], {**first["kwargs"], **kwargs}
