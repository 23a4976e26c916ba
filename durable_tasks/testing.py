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

Time is a :class:`Clock` that only moves when the workflow sleeps or waits, so a three-day sleep takes no
time and ``ctx.now()`` tells where the run is. Outside events are given up front as :class:`Event` objects,
each arriving some time after the start; a wait takes the first matching event that arrives before its
timeout, or times out (the clock jumps to the deadline). That tests both branches of an approval::

    from durable_tasks.testing import Event, run_eagerly

    def test_approved_within_two_days():
        outcome = run_eagerly(approval, 42, events=[Event("approved", {"by": "ana"}, after="3 hours")])
        assert outcome.result == "shipped" and outcome.clock.elapsed == 3 * 3600

    def test_nobody_answers():
        outcome = run_eagerly(approval, 42)  # no event: the wait times out (EventTimeoutError)
        assert outcome.result == "cancelled" and outcome.clock.elapsed == 2 * 86400

A wait without a timeout and without a matching event leaves the run ``waiting``
(``outcome.status``, ``outcome.waiting_for``), as a real run would stay.

Child runs (``ctx.start_child``, ``ctx.run_child``) run eagerly too, on the same clock and with the same
events; ``outcome.children`` holds each child's own outcome by step key::

    outcome = run_eagerly(fulfil_order, 42)
    assert outcome.children["shop.ship_parcel"].result == {"parcel": 42}
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from .attempts import after_failure, error_record
from .chain import CHAIN_WORKFLOW, DurableChain
from .children import after_child_failure, child_failure
from .current import StepInfo, running_step
from .definitions import Workflow
from .durations import epoch_seconds, parse_duration
from .errors import StepFailedError, Suspend
from .messages import OwnMessage
from .outgoing import OutgoingBuffer, task_message, topic_message
from .records import EventWait, StepRow, WrittenStep, check_text
from .registry import WorkflowDefinition, step_definition
from .retry import NO_RETRY, RetryPolicy
from .runtime import Runtime
from .serialization import dumps, loads
from .transitions import event_timeout_error
from .vocabulary import RunStatus, StepKind, StepStatus
from .workflow import WorkflowContext

__all__ = ["Clock", "EagerOutcome", "Event", "run_eagerly"]


class Clock:
    """A test clock: it starts at ``start`` (epoch seconds or an aware ``datetime``; default: now) and
    moves only when told to (``advance``) or when an eager run sleeps or waits."""

    def __init__(self, start: float | datetime | None = None) -> None:
        if isinstance(start, datetime):
            start = epoch_seconds(start, "Clock(start=...)")
        self.start = time.time() if start is None else float(start)
        self._now = self.start

    def now(self) -> float:
        """The clock's time, in epoch seconds."""
        return self._now

    def advance(self, duration: float | str | timedelta) -> None:
        """Move the clock forward by ``duration`` (seconds, a ``timedelta`` or text such as ``"2 days"``)."""
        self._now += parse_duration(duration)

    def advance_to(self, moment: float) -> None:
        """Move the clock forward to the epoch time ``moment`` (never backwards)."""
        self._now = max(self._now, moment)

    @property
    def elapsed(self) -> float:
        """Seconds since the clock's start."""
        return self._now - self.start


@dataclass(frozen=True)
class Event:
    """An outside event for :func:`run_eagerly`: it arrives ``after`` the run's start.

    ``key=None`` addresses it to the run (like ``send_event(run_id, ...)``); a ``key`` to waits on that
    correlation key. Events with the same ``event_id`` are delivered once, as in a real run.
    """

    name: str
    payload: Any = None
    key: str | None = None
    after: float | str | timedelta = 0
    event_id: str | None = None


@dataclass
class EagerOutcome:
    """What :func:`run_eagerly` saw: the result, the journal it would have written, the sleeps, the clock.

    ``status`` is ``succeeded``, or ``waiting`` when the run waits for an event that never comes (then
    ``waiting_for`` names it and ``result`` is None). ``undelivered`` are the given events no wait took.
    """

    result: Any
    journal: list[WrittenStep] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)
    status: str = RunStatus.SUCCEEDED
    waiting_for: str | None = None
    undelivered: list[Event] = field(default_factory=list)
    sent: list[OwnMessage] = field(default_factory=list)
    """The messages of your own the run sent (``ctx.send_task``, ``ctx.publish``, and those of steps that
    succeeded: ``current_step().send_task`` / ``.publish``), in order; nothing leaves the process."""
    children: dict[str, EagerOutcome] = field(default_factory=dict)
    """The outcome of each child run, by its step key (the latest attempt of a retried child)."""

    @property
    def step_keys(self) -> list[str]:
        return [row.step_key for row in self.journal]


@dataclass
class _Arrival:
    event: Event
    at: float
    payload: str


class _EagerWriter:
    def __init__(self, runtime: Runtime, workflow: WorkflowDefinition, run_id: str, outcome: EagerOutcome,
                 arrivals: list[_Arrival]) -> None:
        self.runtime = runtime
        self.workflow = workflow
        self.run_id = run_id
        self.outcome = outcome
        self.arrivals = arrivals
        self.max_sleep = runtime.settings.max_sleep

    def now(self) -> float:
        return self.outcome.clock.now()

    def _attempts(self, position: int, step_key: str, kind: StepKind, name: str, policy: RetryPolicy,
                  call: Callable[[], Any]) -> StepRow:
        attempt = 1
        while True:
            outbox = OutgoingBuffer(self.run_id, step_key, max_bytes=self.runtime.settings.max_payload_bytes,
                                    kafka=True)
            try:
                with running_step(StepInfo(self.run_id, step_key, position, attempt, _outbox=outbox)):
                    value = call()
                text = dumps(value, what=f"result of step {step_key!r} in run {self.run_id}")
            except Exception as exc:
                if after_failure(policy, attempt, exc).retry:  # the same decision as a real run, without the wait
                    attempt += 1
                    continue
                error = json.dumps(error_record(exc, step_key=step_key, attempt=attempt))
                return self._journal(WrittenStep(self.run_id, position, step_key, kind, name, StepStatus.FAILED,
                                                 attempt, error=error))
            self.outcome.sent.extend(message for message, _ in outbox.messages)
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

    def start_sleep(self, position: int, step_key: str, until: float) -> StepRow:
        clock = self.outcome.clock
        self.outcome.slept.append(max(0.0, until - clock.now()))
        clock.advance_to(until)
        return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.SLEEP, step_key,
                                         StepStatus.SUCCEEDED, result="null"))

    def start_wait(self, position: int, step_key: str, wait: EventWait, row: StepRow | None) -> StepRow:
        clock = self.outcome.clock
        retention = self.runtime.settings.event_retention
        deadline = wait.until if wait.until is not None else float("inf")
        matching = [arrival for arrival in self.arrivals
                    if arrival.event.name == wait.name and arrival.event.key in (None, wait.key)
                    and arrival.at <= deadline and arrival.at + retention > clock.now()]
        if matching:
            arrival = min(matching, key=lambda item: item.at)  # stable: the first given wins a tie
            self.arrivals.remove(arrival)
            clock.advance_to(arrival.at)
            return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.EVENT, wait.name,
                                             StepStatus.SUCCEEDED, result=arrival.payload))
        if wait.until is None:
            self.outcome.waiting_for = wait.name
            return WrittenStep(self.run_id, position, step_key, StepKind.EVENT, wait.name, StepStatus.WAITING)
        clock.advance_to(wait.until)
        error = json.dumps(event_timeout_error(step_key, wait.request()))
        return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.EVENT, wait.name,
                                         StepStatus.FAILED, error=error))

    def record_marker(self, position: int, step_key: str) -> StepRow:
        return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.MARKER, step_key,
                                         StepStatus.SUCCEEDED, result="true"))

    def send_task(self, position: int, step_key: str, name: str, call: dict[str, Any]) -> StepRow:
        message, payload = task_message(self.run_id, f"{self.run_id}:{step_key}", name, call["args"], call["kwargs"],
                                        call["options"], max_bytes=self.runtime.settings.max_payload_bytes)
        return self._message(position, step_key, name, message, payload)

    def publish(self, position: int, step_key: str, topic: str, value: Any, key: str | bytes | None) -> StepRow:
        message, payload = topic_message(self.run_id, f"{self.run_id}:{step_key}", topic, value, key,
                                         max_bytes=self.runtime.settings.max_payload_bytes)
        return self._message(position, step_key, topic, message, payload)

    def _message(self, position: int, step_key: str, name: str, message: OwnMessage, payload: str) -> StepRow:
        self.outcome.sent.append(message)
        return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.MESSAGE, name,
                                         StepStatus.SUCCEEDED, request=payload, result=json.dumps(message.id)))

    def start_child(self, position: int, step_key: str, workflow: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any], row: StepRow | None) -> StepRow:
        definition = self.runtime.registry.get(workflow)
        policy = self.workflow.retry or NO_RETRY
        attempt = 1
        while True:
            child = EagerOutcome(result=None, clock=self.outcome.clock)
            self.outcome.children[step_key] = child
            try:
                _run(self.runtime, definition, args, kwargs, child, self.arrivals)
            except Exception as exc:  # the child run failed: its step fails, or the policy starts another child
                cause = _run_error(exc)
                failure = child_failure(f"eager-child-{attempt}", workflow, RunStatus.FAILED, json.dumps(cause),
                                        step_key=step_key, attempt=attempt)
                if after_child_failure(json.dumps({"retry": policy.to_json()}), attempt, RunStatus.FAILED,
                                       failure).retry:
                    attempt += 1
                    continue
                return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.CHILD, workflow,
                                                 StepStatus.FAILED, attempt, error=json.dumps(failure)))
            if child.status == RunStatus.WAITING:  # it waits for an event nobody sends: so does this run
                self.outcome.waiting_for = child.waiting_for
                return WrittenStep(self.run_id, position, step_key, StepKind.CHILD, workflow, StepStatus.RUNNING,
                                   attempt)
            return self._journal(WrittenStep(self.run_id, position, step_key, StepKind.CHILD, workflow,
                                             StepStatus.SUCCEEDED, attempt,
                                             result=dumps(child.result, what=f"result of child {step_key!r}")))


def run_eagerly(target: Workflow[Any, Any] | DurableChain, *args: Any, events: Iterable[Event] = (),
                clock: Clock | None = None, **kwargs: Any) -> EagerOutcome:
    """Run a workflow, ``workflow(*args, **kwargs)``, or a durable chain in memory; return its :class:`EagerOutcome`.

    A chain's ``args``/``kwargs`` go to its first signature, as with ``chain.delay(...)``::

        outcome = run_eagerly(durable.chain(charge_card.s(42), send_receipt.s()))

    ``events`` are outside events that arrive during the run (see :class:`Event`); ``clock`` is the
    :class:`Clock` the run starts on (default: a new one at the current time), so a test can start it at a
    chosen moment for ``ctx.sleep_until``. These two names are taken by this call, so a workflow's own
    keyword arguments cannot use them.

    A step that fails for good raises :class:`~durable_tasks.StepFailedError` out of this call, as it
    would park a real run; so does an event wait that times out when the workflow does not catch its
    :class:`~durable_tasks.EventTimeoutError`.
    """
    if isinstance(target, DurableChain):
        workflow = target.runtime.registry.get(CHAIN_WORKFLOW)
        args, kwargs = (target.elements, list(args), kwargs), {}
    else:
        workflow = target
    outcome = EagerOutcome(result=None, clock=clock or Clock())
    arrivals = _arrivals(events, outcome.clock.now())
    _run(target.runtime, workflow, args, kwargs, outcome, arrivals)
    outcome.undelivered = [arrival.event for arrival in arrivals]
    return outcome


def _run(runtime: Runtime, workflow: WorkflowDefinition, args: Any, kwargs: dict[str, Any], outcome: EagerOutcome,
         arrivals: list[_Arrival]) -> None:
    """Call ``workflow`` once against an empty journal; what it did goes into ``outcome``."""
    run_id = f"eager-{uuid4().hex[:8]}"
    writer = _EagerWriter(runtime, workflow, run_id, outcome, arrivals)
    ctx = WorkflowContext(run_id, workflow.name, {}, writer)
    call = loads(dumps({"args": list(args), "kwargs": kwargs}, what=f"input of workflow {workflow.name!r}"))
    try:
        value = workflow.fn(ctx, *call["args"], **call["kwargs"])
    except Suspend:  # only an event wait without a timeout suspends here: nothing else will come
        outcome.status = RunStatus.WAITING
    else:
        outcome.result = loads(dumps(value, what=f"result of workflow {workflow.name!r}"))


def _run_error(exc: Exception) -> dict[str, Any]:
    """The error a real run would be parked with (a failed step keeps the step's original error type)."""
    if isinstance(exc, StepFailedError):
        return {"type": exc.error_type, "message": exc.error_message}
    return error_record(exc, with_traceback=False)


def _arrivals(events: Iterable[Event], start: float) -> list[_Arrival]:
    """The given events in arrival order, each checked and encoded as ``send_event`` would; of several with
    one event id only the first to arrive counts, as in a real run."""
    arrivals: list[_Arrival] = []
    for event in events:
        check_text(event.name, "An event name")
        check_text(event.key, "A correlation key", optional=True)
        payload = dumps(event.payload, what=f"payload of event {event.name!r}")
        arrivals.append(_Arrival(event, start + parse_duration(event.after), payload))
    arrivals.sort(key=lambda arrival: arrival.at)  # stable: events given at the same time keep their order
    seen: set[str] = set()
    kept: list[_Arrival] = []
    for arrival in arrivals:
        if arrival.event.event_id is not None:
            if arrival.event.event_id in seen:
                continue
            seen.add(arrival.event.event_id)
        kept.append(arrival)
    return kept
