"""Typed views of the journal's rows, as the engine reads them.

Rows come back from SQLAlchemy as ``Row`` objects whose attributes are the table's columns; the Protocols
below name the columns the engine uses, so code that reads a row is type-checked without copying every row
into another object on the hot path. :class:`WrittenStep` is a step row written in the current transaction
(the replay continues with it without reading it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .errors import ConfigurationError

MAX_NAME_LENGTH = 255  # event names, correlation keys and event ids (the columns' width)


class RunRow(Protocol):
    """A row of ``durable_runs``."""

    @property
    def id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def input(self) -> str: ...
    @property
    def result(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def lease_owner(self) -> str | None: ...
    @property
    def lease_until(self) -> float | None: ...
    @property
    def wake_seq(self) -> int: ...
    @property
    def created_at(self) -> float: ...
    @property
    def updated_at(self) -> float: ...
    @property
    def finished_at(self) -> float | None: ...
    @property
    def label(self) -> str | None: ...
    @property
    def forked_from(self) -> str | None: ...


class LockedRun(Protocol):
    """The columns the coordinator reads when it locks a run (a subset of :class:`RunRow`)."""

    @property
    def id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def input(self) -> str: ...
    @property
    def lease_owner(self) -> str | None: ...
    @property
    def lease_until(self) -> float | None: ...
    @property
    def wake_seq(self) -> int: ...
    @property
    def created_at(self) -> float: ...


class StepRow(Protocol):
    """A row of ``durable_steps``: one step of a run's journal."""

    @property
    def run_id(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def step_key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def request(self) -> str | None: ...
    @property
    def result(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def celery_task_id(self) -> str | None: ...
    @property
    def worker(self) -> str | None: ...
    @property
    def created_at(self) -> float: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def finished_at(self) -> float | None: ...
    @property
    def queue(self) -> str | None: ...
    @property
    def published_at(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class WrittenStep:
    """A step row written in this transaction, shaped like a :class:`StepRow` loaded from the journal."""

    run_id: str
    position: int
    step_key: str
    kind: str
    name: str
    status: str
    attempt: int = 1
    request: str | None = None
    result: str | None = None
    error: str | None = None
    celery_task_id: str | None = None
    worker: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    queue: str | None = None
    published_at: float | None = None


class AttemptRow(Protocol):
    """A row of ``durable_attempts``: one finished attempt of a step."""

    @property
    def run_id(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def traceback(self) -> str | None: ...
    @property
    def worker(self) -> str | None: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def duration(self) -> float | None: ...


class TimerRow(Protocol):
    """A row of ``durable_timers``."""

    @property
    def id(self) -> int: ...
    @property
    def run_id(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def purpose(self) -> str: ...
    @property
    def due_at(self) -> float: ...
    @property
    def fired_at(self) -> float | None: ...


class WorkerRow(Protocol):
    """A row of ``durable_workers``: a process known by its heartbeat."""

    @property
    def id(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def started_at(self) -> float: ...
    @property
    def heartbeat_at(self) -> float: ...
    @property
    def role(self) -> str | None: ...
    @property
    def stopped_at(self) -> float | None: ...
    @property
    def heartbeat_interval(self) -> float | None: ...
    @property
    def timeout(self) -> float | None: ...


class WaitRow(Protocol):
    """A row of ``durable_waits``: an event wait that has no event yet."""

    @property
    def run_id(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def correlation_key(self) -> str | None: ...
    @property
    def created_at(self) -> float: ...


class SignalRow(Protocol):
    """A row of ``durable_signals``: an outside event, kept until a wait consumes it or it expires."""

    @property
    def id(self) -> int: ...
    @property
    def event_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...
    @property
    def correlation_key(self) -> str | None: ...
    @property
    def payload(self) -> str: ...
    @property
    def created_at(self) -> float: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def consumed_at(self) -> float | None: ...
    @property
    def consumed_position(self) -> int | None: ...


def check_text(value: object, what: str, *, optional: bool = False) -> None:
    """Refuse an event name, correlation key or event id that the journal cannot hold."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        shown = repr(value)
        if isinstance(value, str) and len(value) > 80:
            shown = f"{value[:80]!r}... ({len(value)} characters)"
        raise ConfigurationError(f"{what} must be non-empty text of at most {MAX_NAME_LENGTH} characters, "
                                 f"not {shown}.")


@dataclass(frozen=True, slots=True)
class EventWait:
    """What ``ctx.wait_for_event`` waits for: an event ``name`` sent to the run (or to ``key``), until ``until``.

    ``timeout`` is in seconds and ``until`` an epoch time; both are None for a wait without a timeout.
    """

    name: str
    key: str | None
    timeout: float | None
    until: float | None

    def __post_init__(self) -> None:
        check_text(self.name, "An event name")
        check_text(self.key, "A correlation key", optional=True)

    def request(self) -> dict[str, object]:
        """The wait as its step row's ``request`` column keeps it."""
        return {"event": self.name, "key": self.key, "timeout": self.timeout, "until": self.until}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to deliver or keep: its address (a run, or a correlation key), its encoded payload and id."""

    event_id: str
    name: str
    payload: str
    run_id: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        check_text(self.event_id, "An event id")
        check_text(self.name, "An event name")
        check_text(self.key, "A correlation key", optional=True)
