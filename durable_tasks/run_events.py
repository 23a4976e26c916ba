"""Monitoring events: committed transitions as Celery task events (for Flower) and ``durable-*`` events.

:class:`RunEvents` is an :class:`~durable_tasks.observe.Observer`. After each commit it turns the batch of
transitions into events and hands them to an :class:`EventSink` (in a worker,
:class:`durable_tasks.celery_events.WorkerEvents`, which publishes them like Celery's own task events).

How a run shows in Flower (``celery.events.state``, which Flower uses). A run is **one task whose id is
the run id**, named after its workflow::

    first advance            task-received (args, kwargs) + task-started         RECEIVED -> STARTED
    sleeping on a timer      task-sleeping (eta = when it wakes)                 SLEEPING
    waiting for an event     task-waiting                                        WAITING
    awake again / resumed    task-retried + task-started                         RETRY -> STARTED
    finished                 task-succeeded (result, runtime) / task-failed      SUCCESS / FAILURE
    cancelled                task-retried + task-revoked                         REVOKED

Its step tasks (and the coordinator's ``durable_tasks.advance`` tasks) are sent with the run id as their
``root_id`` and ``parent_id``, so Flower lists them under the run. Why one id per run with RETRY on wake-up:
Celery's state ranks a custom state (``SLEEPING``) above ``STARTED`` and ``RECEIVED``, so a woken run
would stay ``SLEEPING`` until it ends; ``RETRY`` is the one state every later event overrides, so a wake-up
passes through it. One id per execution segment would leave a finished-looking (or forever sleeping) task
behind for every sleep, and Flower's task page for the run id would not show the run's current state.

``durable-run`` and ``durable-step`` events carry every transition with its detail (status, step key,
kind, attempt, error, due time, worker) for consumers other than Flower; Flower ignores them.
Events are best-effort: the journal is the record.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Container, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from .logs import RateLimitedLog
from .observe import Transition
from .vocabulary import RunStatus, StepKind, StepStatus

logger = logging.getLogger("durable_tasks.run_events")
_send_failures = RateLimitedLog(logger, every=60.0)

RUN_EVENT = "durable-run"
STEP_EVENT = "durable-step"
# Custom task states: Flower shows the event type's subject, upper-cased (task-sleeping -> SLEEPING).
SLEEPING_EVENT = "task-sleeping"
WAITING_EVENT = "task-waiting"
# States Celery's state machine only leaves through RETRY (finished ones and custom ones).
_STICKY = frozenset({RunStatus.SLEEPING, RunStatus.WAITING, RunStatus.SUCCEEDED, RunStatus.FAILED,
                     RunStatus.CANCELLED})
MAX_REPR = 1024  # Celery's own task events cut args and results to about this size too

Event = tuple[str, dict[str, Any]]


class EventSink(Protocol):
    """Where events go: the events of one commit, in order, as ``(type, fields)`` pairs.

    ``send([("task-started", {"uuid": ..., ...}), ...])``; it must not block for long.
    """

    def send(self, events: Sequence[Event]) -> None: ...


class RunEvents:
    """The observer that sends each commit's events to ``sink`` (errors are logged, rate-limited).

    It remembers (up to ``remember`` of them) the runs this process has announced, so the first event it
    sends about a run that started elsewhere (a client's ``Workflow.run``, another worker, before a
    restart) opens it with its name and arguments too.
    """

    def __init__(self, sink: EventSink, *, remember: int = 10_000) -> None:
        self.sink = sink
        self.remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()

    def on_committed(self, transitions: Sequence[Transition]) -> None:
        if not getattr(self.sink, "active", True):
            return  # not a worker, or one without -E: every step's commit would build events for nothing
        events = events_for(transitions, self._seen)
        for transition in transitions:
            if transition.subject == "run":
                self._seen[transition.run_id] = None
                self._seen.move_to_end(transition.run_id)
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        try:
            self.sink.send(events)
        except Exception:
            _send_failures.exception("send", "Could not send the events of run %s (events are best-effort; the "
                                     "journal has the change).", transitions[0].run_id, level=logging.WARNING)


def events_for(transitions: Sequence[Transition], seen: Container[str] = frozenset()) -> list[Event]:
    """The events of one committed batch, in order: task events for Flower, then ``durable-*`` detail.

    A run that leaves ``pending`` in this batch, or that is not in ``seen`` (the runs this process has
    announced already), is opened (received, started) before anything else of the batch, so a sleep
    journaled in the same commit shows after it. Opening a run Flower knows already changes nothing there:
    Celery's state only merges the name and arguments of a late ``task-received``.
    """
    events: list[Event] = []
    opened: set[str] = set()
    for transition in transitions:
        if transition.subject != "run" or transition.status == RunStatus.PENDING or transition.run_id in opened:
            continue  # a run just created is not running yet: it opens at its first advance
        if transition.detail.get("previous") == RunStatus.PENDING or transition.run_id not in seen:
            events.extend(_opening(transition))
            opened.add(transition.run_id)
    for transition in transitions:
        if transition.subject == "run":
            events.extend(_run_task_events(transition))
            events.append((RUN_EVENT, _durable_fields(transition)))
        else:
            events.extend(_step_task_events(transition))
            events.append((STEP_EVENT, _durable_fields(transition)))
    return events


# --- the run as a Celery task -------------------------------------------------------------------------


def _base(transition: Transition) -> dict[str, Any]:
    return {"uuid": transition.run_id, "timestamp": transition.at, "name": transition.detail.get("workflow")}


def _opening(transition: Transition) -> list[Event]:
    """task-received with the run's arguments, then task-started."""
    received = _base(transition)
    args, kwargs = _call(transition.detail.get("input"))
    received.update(args=args, kwargs=kwargs, root_id=transition.run_id, parent_id=None, retries=0, eta=None,
                    expires=None)
    return [("task-received", received), ("task-started", _base(transition))]


def _run_task_events(transition: Transition) -> list[Event]:
    # After _opening (RECEIVED, STARTED) a run still RUNNING needs nothing more, whatever came before.
    detail = transition.detail
    status = transition.status
    previous = detail.get("previous")
    base = _base(transition)
    events: list[Event] = []
    if previous in _STICKY or (status == RunStatus.CANCELLED and previous is None):
        # Only RETRY leaves a custom or finished state in Celery's state machine.
        events.append(("task-retried", {**base, "exception": _reopened_because(status, previous),
                                        "traceback": None}))
    if status == RunStatus.RUNNING and previous not in (RunStatus.PENDING, RunStatus.RUNNING, None):
        events.append(("task-started", {**base, "exception": None, "traceback": None, "eta": None}))
    elif status == RunStatus.SUCCEEDED:
        events.append(("task-succeeded", {**base, "result": _short(_loads(detail.get("result"))),
                                          "runtime": _runtime(transition), "exception": None, "traceback": None,
                                          "eta": None}))
    elif status == RunStatus.FAILED:
        error = _loads(detail.get("error")) or {}
        events.append(("task-failed", {**base, "exception": _exception(error), "eta": None,
                                       "traceback": error.get("traceback") or error.get("summary")}))
    elif status == RunStatus.CANCELLED:
        error = _loads(detail.get("error")) or {}
        events.append(("task-revoked", {**base, "terminated": False, "signum": None, "expired": False,
                                        "exception": _exception(error), "eta": None}))
    elif status == RunStatus.WAITING:
        events.append((WAITING_EVENT, base))
    elif status == RunStatus.SLEEPING and detail.get("announced"):
        events.append((SLEEPING_EVENT, base))
    # SLEEPING is announced by the sleep step's own transition, which knows the step and when it wakes.
    return events


def _step_task_events(transition: Transition) -> list[Event]:
    if transition.kind == StepKind.SLEEP and transition.status == StepStatus.SLEEPING:
        due = transition.detail.get("due_at")
        return [(SLEEPING_EVENT, {"uuid": transition.run_id, "timestamp": transition.at,
                                  "eta": _iso(due) if due else None, "step_key": transition.step_key})]
    return []


def _reopened_because(status: str, previous: str | None) -> str:
    if status == RunStatus.CANCELLED:
        return "cancelled"
    if previous == RunStatus.FAILED:
        return "resumed by an operator"
    return f"woke up ({previous} before)"


def _runtime(transition: Transition) -> float | None:
    created = transition.detail.get("created_at")
    return round(transition.at - created, 6) if created else None


def _exception(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type") or "Error").rsplit(".", 1)[-1]
    return f"{kind}({str(error.get('message', ''))!r})"


def _call(text: str | None) -> tuple[str, str]:
    call = _loads(text) or {}
    return _short(tuple(call.get("args") or ())), _short(call.get("kwargs") or {})


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


# --- durable-* events ---------------------------------------------------------------------------------


def _durable_fields(transition: Transition) -> dict[str, Any]:
    fields: dict[str, Any] = {"run_id": transition.run_id, "status": transition.status,
                              "timestamp": transition.at}
    if transition.subject == "step":
        fields.update(position=transition.position, step_key=transition.step_key, kind=transition.kind,
                      attempt=transition.attempt)
    for key, value in transition.detail.items():
        if key not in ("input", "result"):  # payloads can be large; the journal has them
            fields[key] = value
    return fields
