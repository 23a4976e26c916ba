"""The workflow context: deterministic step keys, replay from the journal, and suspension.

A workflow function is called again from the top every time its run advances. Each ``ctx`` call takes the
next *position* in the journal; when the journal already holds that position the recorded result is
returned at once (I1), when it holds a different step the code changed under the run (I6), and when the
journal ends there the step is started and, if its result is needed, the call suspends the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from celery.canvas import Signature

from .current import Tick
from .durations import describe, epoch_seconds, parse_duration
from .errors import ConfigurationError, EventTimeoutError, NonDeterminismError, StepFailedError, Suspend
from .records import EventWait, StepRow, check_text
from .registry import WorkflowDefinition
from .serialization import loads
from .vocabulary import StepKind, StepStatus

if TYPE_CHECKING:
    from celery import Task


class JournalWriter(Protocol):
    """What the context needs to start new steps: the coordinator's ``Replay``, or the eager runner.

    ``call`` holds the task step's ``args``, ``kwargs`` and Celery ``options``. ``now`` is the writer's
    clock (the wall clock, or the eager runner's test clock); ``max_sleep`` the longest sleep or event
    timeout it accepts.
    """

    max_sleep: float

    def now(self) -> float: ...

    def dispatch_task(self, position: int, step_key: str, name: str, call: dict[str, Any]) -> StepRow: ...

    def run_inline(self, position: int, step_key: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any], row: StepRow | None) -> StepRow: ...

    def start_sleep(self, position: int, step_key: str, until: float) -> StepRow: ...

    def start_wait(self, position: int, step_key: str, wait: EventWait, row: StepRow | None) -> StepRow: ...

    def record_marker(self, position: int, step_key: str) -> StepRow: ...

    def send_task(self, position: int, step_key: str, name: str, call: dict[str, Any]) -> StepRow: ...

    def publish(self, position: int, step_key: str, topic: str, value: Any, key: str | bytes | None) -> StepRow: ...

    def start_child(self, position: int, step_key: str, workflow: str, args: tuple[Any, ...],
                    kwargs: dict[str, Any], row: StepRow | None) -> StepRow: ...


# Decoded results of these types can be handed to every replay: nothing can change them in place.
_SHARED_RESULT_TYPES = (int, float, str, bool, type(None))
_UNKNOWN = object()


class StepFuture:
    """A step started with :meth:`WorkflowContext.run_async` or :meth:`WorkflowContext.start_child`; pass it to
    :meth:`WorkflowContext.gather`."""

    __slots__ = ("_row", "_values", "step_key")

    def __init__(self, step_key: str, row: StepRow, values: dict[int, Any] | None = None) -> None:
        self.step_key = step_key
        self._row = row
        self._values = values

    def done(self) -> bool:
        return self._row.status in (StepStatus.SUCCEEDED, StepStatus.FAILED)

    def result(self) -> Any:
        """The step's result; suspends the run when it has none yet, raises when the step failed."""
        if self._row.status == StepStatus.SUCCEEDED:
            values = self._values
            if values is None:
                return loads(self._row.result)
            # A succeeded step's result changes only with a restart, which starts a fresh journal (and memo).
            value = values.get(self._row.position, _UNKNOWN)
            if value is _UNKNOWN:
                value = loads(self._row.result)
                if isinstance(value, _SHARED_RESULT_TYPES):
                    values[self._row.position] = value
            return value
        if self._row.status == StepStatus.FAILED:
            error = loads(self._row.error) or {}
            raise StepFailedError(
                f"Step {self.step_key!r} failed: {error.get('type')}: {error.get('message')}",
                step_key=self.step_key,
                error_type=str(error.get("type")),
                error_message=str(error.get("message")),
            )
        raise Suspend(self._row.kind)


class WorkflowContext:
    """The ``ctx`` a workflow receives: its only door to steps, timers and the run's identity."""

    def __init__(self, run_id: str, workflow: str, journal: Mapping[int, StepRow], writer: JournalWriter, *,
                 tick: Tick | None = None, memo: dict[str, Any] | None = None) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.tick = tick
        """The schedule tick this run was started for (:class:`~durable_tasks.Tick`), or None."""
        self._journal = journal
        self._writer = writer
        self._position = 0
        self._counts: dict[str, int] = {}
        # What a replay derives from the journal and the run's input, kept with the journal between advances:
        # decoded scalar results (by position), a chain's layout.
        self._memo: dict[str, Any] = {} if memo is None else memo
        self._values: dict[int, Any] = self._memo.setdefault("values", {})

    # --- keys and replay ----------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        count = self._counts.get(name, 0) + 1
        self._counts[name] = count
        return name if count == 1 else f"{name}#{count}"

    def _replayed(self, kind: StepKind, name: str) -> tuple[int, str, StepRow | None]:
        position = self._position
        self._position += 1
        key = self._key(name)
        row = self._journal.get(position)
        if row is not None and (row.kind != kind or row.step_key != key):
            raise NonDeterminismError(
                f"Run {self.run_id} of workflow {self.workflow!r} took a different path on replay: at step "
                f"position {position} the journal holds {row.kind} step {row.step_key!r}, but this replay asked "
                f"for {kind} step {key!r}. A replay must make the same calls in the same order. Usual causes: the "
                "workflow code changed under the run (finish old runs on the old code, guard the change with "
                "ctx.patched('<change-name>'), see docs/versioning.md, or fork the run); the workflow branches on "
                "randomness, the clock or an outside read (a database, an API, a file) that gave another answer "
                "this time. Record such values with ctx.step(...) so the replay reuses them. Resuming the run "
                "replays it again; it only helps once the path is deterministic."
            )
        return position, key, row

    def _journaled(self, position: int) -> StepRow | None:
        """The journal's row at ``position`` (for built-in workflows that know their journal's layout)."""
        return self._journal.get(position)

    def _seek(self, position: int, counts: Mapping[str, int]) -> None:
        """Go on at ``position`` as if the calls before it had been replayed, with ``counts`` as their step names'
        call counts: a built-in workflow that knows its journal's layout (a durable chain) skips replaying
        what it has done, so an advance costs the same at step 1,000 as at step 10."""
        self._position = position
        self._counts = dict(counts)

    # --- steps ---------------------------------------------------------------------------------------

    def run(self, task: Task | Signature | str, *args: Any, **kwargs: Any) -> Any:
        """Run a Celery task as a journaled step and return its result (suspending until it has one).

        ``task`` is a task, a signature (its arguments come after the ones given here, its options such as
        ``queue`` apply; ``.set(step_key="name")`` names the step) or a registered task name::

            payment = ctx.run(charge_card, order_id)
            label = ctx.run(print_label.s(order_id).set(queue="printers"))
        """
        return self.run_async(task, *args, **kwargs).result()

    def run_async(self, task: Task | Signature | str, *args: Any, **kwargs: Any) -> StepFuture:
        """Start a Celery task step without waiting for it (fan-out); collect it with :meth:`gather`."""
        call_args: Sequence[Any]
        call_kwargs: Mapping[str, Any]
        if isinstance(task, Signature | str):
            name, call_args, call_kwargs, options = task_request(task, args, kwargs)
            step_name = options.pop("step_key", None) or name
        else:  # a task: the common case, replayed once per journaled call, so no copies until it is new
            name = step_name = task_request(task, (), {})[0]
            call_args, call_kwargs, options = args, kwargs, {}
        position, key, row = self._replayed(StepKind.TASK, step_name)
        if row is None:
            call = {"args": list(call_args), "kwargs": dict(call_kwargs), "options": options}
            row = self._writer.dispatch_task(position, key, name, call)
        return StepFuture(key, row, self._values)

    def gather(self, *futures: StepFuture) -> list[Any]:
        """Wait for every future and return their results in order (fan-in).

        The run suspends until all are done; the first failed step raises :class:`StepFailedError`::

            shipped, notified = ctx.gather(ctx.run_async(ship, order_id), ctx.run_async(notify, order_id))
        """
        for future in futures:
            if not future.done():
                future.result()  # suspends
        return [future.result() for future in futures]

    def start_child(self, workflow: WorkflowDefinition | str, /, *args: Any, **kwargs: Any) -> StepFuture:
        """Start a run of ``workflow`` (a workflow or its name) as a child of this run, without waiting for it.

        The child is a run of its own (``durable runs show`` links the two), journaled here as a ``child``
        step keyed by the workflow's name; a replay of this run never starts it twice. Collect it with
        :meth:`gather` (fan-out, fan-in)::

            parcels = ctx.gather(*(ctx.start_child(ship_parcel, parcel) for parcel in parcels))

        A child that fails fails this step (the workflow's ``retry`` policy may start it again, as a new child
        run); cancelling this run cancels its children.
        """
        name = workflow if isinstance(workflow, str) else getattr(workflow, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"ctx.start_child() takes a workflow or its name, not {type(workflow).__name__}")
        position, key, row = self._replayed(StepKind.CHILD, name)
        if row is None or row.status == StepStatus.DISPATCHED:  # new, retried, or restarted by an operator
            row = self._writer.start_child(position, key, name, args, kwargs, row)
        return StepFuture(key, row)

    def run_child(self, workflow: WorkflowDefinition | str, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``workflow`` as a child run and return its result (suspending this run until it finishes)::

            receipt = ctx.run_child(ship_parcel, order_id)

        Raises :class:`StepFailedError` (with the child's error type) when the child failed for good.
        """
        return self.start_child(workflow, *args, **kwargs).result()

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in the coordinator as a journaled inline step and return its result.

        The result is committed before the workflow goes on, so after a crash the step is not run again.
        A retry policy comes from ``@durable.step(retry=...)`` on ``fn`` or from the workflow::

            summary = ctx.step("summarise", summarise, payment)
        """
        position, key, row = self._replayed(StepKind.INLINE, name)
        # New, retried, or lost with a crash:
        if row is None or row.status in (StepStatus.DISPATCHED, StepStatus.RUNNING):
            row = self._writer.run_inline(position, key, fn, args, kwargs, row)
        return StepFuture(key, row, self._values).result()

    def sleep(self, name: str, duration: float | str | timedelta, /) -> None:
        """Sleep durably: the run is parked on a timer and resumes after ``duration``, across restarts.

        ``duration`` is seconds, a ``timedelta`` or text: ``ctx.sleep("cool-off", "3 days")``,
        ``ctx.sleep("retry-window", "1h30m")``. Over ``max_sleep`` (a setting) it is refused.
        """
        seconds = parse_duration(duration)
        position, key, row = self._replayed(StepKind.SLEEP, name)
        if row is None:
            self._within_limit(seconds, f"ctx.sleep({name!r}, {duration!r})")
            row = self._writer.start_sleep(position, key, self._writer.now() + seconds)
        StepFuture(key, row).result()

    def sleep_until(self, name: str, when: datetime, /) -> None:
        """Sleep durably until the moment ``when``, a ``datetime`` with a time zone (a past moment: no sleep).

        ::

            ctx.sleep_until("renewal", datetime(2027, 1, 1, 9, 0, tzinfo=ZoneInfo("Europe/Berlin")))

        A naive ``datetime`` is refused: its moment would depend on the machine's zone.
        """
        until = epoch_seconds(when, f"ctx.sleep_until({name!r}, ...)")
        position, key, row = self._replayed(StepKind.SLEEP, name)
        if row is None:
            self._within_limit(until - self._writer.now(), f"ctx.sleep_until({name!r}, {when.isoformat()})")
            row = self._writer.start_sleep(position, key, until)
        StepFuture(key, row).result()

    def wait_for_event(self, name: str, /, timeout: float | str | timedelta | None = None, *,
                       key: str | None = None) -> Any:
        """Wait durably for the outside event ``name`` and return its payload (which may be ``None``).

        The event comes from ``durable.send_event(run_id, name, payload)``, from a signed token
        (``durable.event_token``), or, with a correlation ``key``, from ``send_event(key=..., name=...)``
        by a sender that does not know the run. An event sent before the wait is kept and taken at once.
        Without an event within ``timeout`` it raises :class:`~durable_tasks.EventTimeoutError`::

            try:
                decision = ctx.wait_for_event("approved", timeout="2 days", key=f"order-{order_id}")
            except EventTimeoutError:
                decision = {"approved": False, "by": "timeout"}
        """
        check_text(name, "An event name")
        check_text(key, "A correlation key", optional=True)
        seconds = None if timeout is None else parse_duration(timeout)
        position, step_key, row = self._replayed(StepKind.EVENT, name)
        if row is None or row.status == StepStatus.DISPATCHED:  # new, or restarted by an operator
            until = None
            if seconds is not None:
                self._within_limit(seconds, f"ctx.wait_for_event({name!r}, timeout={timeout!r})")
                until = self._writer.now() + seconds
            row = self._writer.start_wait(position, step_key, EventWait(name, key, seconds, until), row)
        if row.status == StepStatus.SUCCEEDED:
            return loads(row.result)
        if row.status == StepStatus.FAILED:
            raise _wait_failed(step_key, row)
        raise Suspend(StepKind.EVENT)

    def send_task(self, task: Task | Signature | str, *args: Any, **kwargs: Any) -> str:
        """Send a Celery task message of your own, once: journaled as a ``message`` step, sent after the commit
        that records it, never again on replay. Returns the message id (``run_id:step_key``), which is the
        Celery task id, so a consumer can drop a duplicate (the relay re-sends a message its broker never
        confirmed). ``task`` is a task, a signature or a task name (of any app on the broker); the step key is
        the task name, or ``.set(step_key="name")``::

            ctx.send_task(notify_warehouse, order_id)
            ctx.send_task(app.signature("billing.invoice", queue="billing"), order_id)
        """
        name, call_args, call_kwargs, options = task_request(task, args, kwargs)
        step_name = options.pop("step_key", None) or name
        position, key, row = self._replayed(StepKind.MESSAGE, step_name)
        if row is None:
            call = {"args": call_args, "kwargs": call_kwargs, "options": options}
            row = self._writer.send_task(position, key, name, call)
        return str(loads(row.result))

    def publish(self, topic: str, value: Any, *, key: str | bytes | None = None, name: str | None = None) -> str:
        """Publish a Kafka record of your own, once (needs the ``kafka_servers`` setting and the ``kafka`` extra).

        Journaled as a ``message`` step and produced after the commit that records it; returns the message id
        (``run_id:step_key``), also in the record's ``durable-message-id`` header. ``value`` is bytes, text or
        a JSON value (sent as JSON); ``name`` is the step key (default: the topic)::

            ctx.publish("orders.shipped", {"order": order_id}, key=str(order_id))
        """
        position, step_key, row = self._replayed(StepKind.MESSAGE, name or topic)
        if row is None:
            row = self._writer.publish(position, step_key, topic, value, key)
        return str(loads(row.result))

    def _within_limit(self, seconds: float, what: str) -> None:
        limit = self._writer.max_sleep
        if seconds > limit:
            raise ConfigurationError(
                f"{what} asks for {describe(seconds)} ({seconds:.10g}s), longer than max_sleep ({describe(limit)}). "
                "Check the unit; to allow it, raise the setting: Durable(app, max_sleep='800 days') or "
                "app.conf.durable_max_sleep."
            )

    def patched(self, change_id: str) -> bool:
        """True when this run follows the code after the change ``change_id``; False for older runs.

        Wrap new or changed steps in ``if ctx.patched("add-fraud-check"):`` so that runs that passed this
        point on the old code replay unchanged while new runs take the new path (see docs/versioning.md).
        """
        position = self._position
        row = self._journal.get(position)
        if row is not None:
            if row.kind == StepKind.MARKER and row.step_key == change_id:
                self._position += 1
                return True
            return False  # this run passed this point on the old code
        self._position += 1
        self._writer.record_marker(position, change_id)
        return True

    def now(self) -> float:
        """Wall-clock time (the test clock under the eager runner); for decisions that must replay the same
        way, journal it with ``ctx.step``."""
        return self._writer.now()


def _wait_failed(step_key: str, row: StepRow) -> StepFailedError:
    """The error an event wait's journaled failure raises: a timeout, or whatever else ended it."""
    error = loads(row.error) or {}
    message = str(error.get("message"))
    if error.get("type") == f"{EventTimeoutError.__module__}.{EventTimeoutError.__qualname__}":
        return EventTimeoutError(f"Step {step_key!r} timed out: {message}", step_key=step_key,
                                 event=str(error.get("event")), key=error.get("key"), timeout=error.get("timeout"))
    return StepFailedError(f"Step {step_key!r} failed: {error.get('type')}: {message}", step_key=step_key,
                           error_type=str(error.get("type")), error_message=message)


def task_request(
    task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, list[Any], dict[str, Any], dict[str, Any]]:
    """(task name, args, kwargs, options) for a task, signature or name, with Celery's partial rules.

    A mutable signature gets the given arguments *before* its own (as a chain passes the previous result
    first); an immutable one (``.si()``) ignores them.
    """
    if isinstance(task, str):
        return task, list(args), dict(kwargs), {}
    if isinstance(task, Signature):
        signature = task
        immutable = bool(signature.immutable)
        merged_args = list(signature.args) if immutable else [*args, *signature.args]
        merged_kwargs = dict(signature.kwargs) if immutable else {**signature.kwargs, **kwargs}
        return signature.task, merged_args, merged_kwargs, dict(signature.options)
    name = getattr(task, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"ctx.run() takes a Celery task, a signature or a task name, not {type(task).__name__}")
    return name, list(args), dict(kwargs), {}
