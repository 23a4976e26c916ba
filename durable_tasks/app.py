"""The :class:`Durable` facade: the one object a project creates next to its Celery app."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any, TypeVar, overload

from celery import Celery
from celery.utils.imports import gen_task_name
from sqlalchemy import Connection

from . import celery_chains
from .celery_bridge import CeleryPublisher, install_bootstep, register_coordinator_task
from .celery_events import WorkerEvents
from .chain import CHAIN_WORKFLOW, ChainSleep, DurableChain, run_chain
from .config import Settings, resolve_settings
from .cron import (
    TASK_WORKFLOW,
    ScheduleBook,
    app_scope,
    declaration,
    declaring_module,
    run_task,
    task_declaration,
)
from .definitions import Workflow
from .durations import parse_duration
from .errors import ConfigurationError
from .events import EventReceipt, EventSender
from .handle import RunHandle, RunRecord, StepRecord, load_steps
from .joining import OnCommit
from .operations import Operations
from .registry import STEP_ATTRIBUTE, StepDefinition, WorkflowDefinition
from .retry import RetryPolicy
from .run_events import RunEvents
from .runtime import Runtime
from .schedule_ops import ScheduleInfo, ScheduleOperations
from .schedule_sync import SyncReport, sync_schedules
from .schedules import CatchUp, Overlap, parse_schedule
from .starting import start_run
from .store import queries
from .store.database import Store
from .task_step import make_step
from .timers import DatabaseTimers, TimerBackend

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("durable_tasks.worker")
T = TypeVar("T")


class Durable:
    """Durable workflows and chains for the tasks of one Celery app.

    ::

        app = Celery("shop", broker="redis://127.0.0.1:6379/0")
        durable = Durable(app, store="postgresql+psycopg://postgres@127.0.0.1/test")

    ``store`` defaults to ``app.conf.durable_store``, then ``$DURABLE_STORE``, then a SQLite file
    ``durable.sqlite3``. Every other option of :class:`~durable_tasks.config.Settings` can be passed as a
    keyword or set as ``app.conf.durable_<name>``. With ``chains=True`` (``app.conf.durable_chains = True``) the
    app's Celery chains of durable steps start as durable runs, unchanged calling code included.
    """

    def __init__(self, app: Celery, store: str | None = None, **options: Any) -> None:
        if getattr(app, "_durable", None) is not None:
            raise ConfigurationError(f"Celery app {app.main!r} already has a Durable instance; create one per app.")
        self.app = app
        settings = resolve_settings(app.conf, {"store": store, **options})
        publisher = CeleryPublisher(app, settings.queue)
        self.runtime = Runtime(app, settings, publisher)
        self.timers: TimerBackend = self._timer_backend(publisher)
        self.operations = Operations(self.runtime.store, self.runtime.unit_of_work)
        self.events = EventSender(self.runtime.store, self.runtime.unit_of_work, settings)
        self.runtime.registry.add(WorkflowDefinition(run_chain, CHAIN_WORKFLOW, None, keeps_input=True))
        self.runtime.registry.add(WorkflowDefinition(run_task, TASK_WORKFLOW, None))
        self.schedule_book = ScheduleBook()
        self.schedule_operations = ScheduleOperations(self.runtime.store, self.runtime.unit_of_work)
        self.advance_task = register_coordinator_task(self.runtime)
        self.worker_events = WorkerEvents(app)  # sends only once this process turns out to be a worker
        self.runtime.observers.append(RunEvents(self.worker_events))
        install_bootstep(self.runtime, self.timers, self.worker_events, self._metrics_endpoint(),
                         schedules=self.schedule_book)
        celery_chains.install(self.runtime)  # chains of this app become durable runs with the chains setting
        app._durable = self  # type: ignore[attr-defined]

    def _timer_backend(self, publisher: CeleryPublisher) -> TimerBackend:
        """The database poller, or with ``timer_backend="kafka"`` the delay-topic backend (the optional extra)."""
        if self.runtime.settings.timer_backend != "kafka":
            return DatabaseTimers(self.runtime)
        from .integrations.kafka.backend import KafkaTimers, config_from_settings  # only when asked for

        settings = self.runtime.settings
        backend = KafkaTimers(self.runtime, config_from_settings(settings), grace=settings.timer_grace)
        publisher.timer_sink = backend
        return backend

    def _metrics_endpoint(self) -> Callable[[Any], None] | None:
        """With ``metrics_port``: count this process's transitions, and serve them from the worker."""
        port = self.runtime.settings.metrics_port
        if port is None:
            return None
        from .integrations.prometheus import metrics_registry, serve  # the optional extra, only when asked

        registry, counters = metrics_registry(self.store, worker_timeout=self.settings.worker_timeout)
        self.runtime.observers.append(counters)

        def start(worker: Any) -> None:
            try:
                serve(registry, port, self.settings.metrics_address)
            except OSError as exc:
                logger.error("Could not serve durable-tasks metrics on %s:%d (%s); is another worker on this "
                             "host using the port? Give each worker its own durable_metrics_port.",
                             self.settings.metrics_address, port, exc)

        return start

    @property
    def settings(self) -> Settings:
        """The resolved settings (arguments over ``app.conf.durable_*`` over defaults)."""
        return self.runtime.settings

    @property
    def store(self) -> Store:
        """The journal database."""
        return self.runtime.store

    def close(self) -> None:
        """Stop this process's heartbeats and close the store's connections (tests, scripts)."""
        self.runtime.identity.stop()
        self.runtime.topics.close()
        self.runtime.store.dispose()

    # --- declaring ---------------------------------------------------------------------------------------

    @overload
    def step(self, task: F, /) -> F: ...
    @overload
    def step(self, /, *, retry: RetryPolicy | None = None) -> Callable[[F], F]: ...

    def step(self, task: Any = None, /, *, retry: RetryPolicy | None = None) -> Any:
        """Make an existing Celery task (or a plain function for ``ctx.step``) a durable step.

        Put it above ``@app.task``; the task keeps working with ``.delay()`` outside durable runs::

            @durable.step(retry=RetryPolicy(max_attempts=5, backoff="exponential"))
            @app.task
            def charge_card(order_id: int) -> dict: ...
        """
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry= takes a RetryPolicy, not {type(retry).__name__}.")

        def decorate(target: Any) -> Any:
            if hasattr(target, "apply_async"):
                return make_step(self.runtime, target, retry)
            if callable(target):
                setattr(target, STEP_ATTRIBUTE, StepDefinition(retry))
                return target
            raise ConfigurationError(f"@durable.step decorates a Celery task or a function, not {target!r}.")

        return decorate if task is None else decorate(task)

    @overload
    def workflow(self, fn: Callable[..., Any], /) -> Workflow[Any, Any]: ...
    @overload
    def workflow(self, /, *, name: str | None = None, retry: RetryPolicy | None = None
                 ) -> Callable[[Callable[..., Any]], Workflow[Any, Any]]: ...

    def workflow(self, fn: Any = None, /, *, name: str | None = None, retry: RetryPolicy | None = None) -> Any:
        """Declare a durable workflow: a function ``fn(ctx, *args, **kwargs)`` replayed from its journal.

        ``retry`` is the default policy of its steps. The name (default ``module.qualname``, named like
        Celery names tasks) is how workers find the code, so keep it stable::

            @durable.workflow
            def checkout(ctx, order_id: int):
                payment = ctx.run(charge_card, order_id)
                return {"payment": payment}
        """

        def decorate(function: Callable[..., Any]) -> Workflow[Any, Any]:
            # Named like Celery names tasks, so "__main__" becomes the app's main module name.
            default = gen_task_name(self.app, function.__qualname__, function.__module__)
            workflow: Workflow[Any, Any] = Workflow(self.runtime, function, name or default, retry)
            self.runtime.registry.add(workflow)
            return workflow

        return decorate if fn is None else decorate(fn)

    def cron(self, cron: str | None = None, /, *, name: str | None = None,
             every: float | str | timedelta | None = None, tz: str | tzinfo = "UTC",
             overlap: Overlap | str = Overlap.SKIP, catch_up: CatchUp | str = CatchUp.LATEST,
             catch_up_window: float | str | timedelta = "1d", jitter: float | str | timedelta | None = None,
             start_at: datetime | float | None = None, end_at: datetime | float | None = None, paused: bool = False,
             buffer_limit: int = 100, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
             options: Mapping[str, Any] | None = None) -> Callable[[T], T]:
        """Run a workflow, or an existing Celery task, at each tick of a cron expression or an interval.

        Each tick starts one run, keyed by ``(name, tick)`` in the database, so it runs once however many
        workers there are. ``args``/``kwargs`` are each run's input; the tick is ``ctx.tick`` in a workflow and
        ``current_step().tick`` in a task. On a task, ``options`` (``queue``, ``priority``, ...) apply to its
        message, and the declaration makes the task a durable step, like ``@durable.step``: declare it in a
        module every worker imports. ``name`` defaults to the workflow's or task's name. See docs/cron.md::

            @durable.cron("0 9 * * MON", tz="Europe/Berlin", catch_up="latest")
            @durable.workflow
            def weekly_report(ctx): ...

            durable.cron(every="15m", name="sync-inventory", args=["eu"])(sync_inventory)

        Every mistake (a bad expression or zone, an unknown policy, a name used twice, arguments that are not
        JSON) raises :class:`~durable_tasks.ConfigurationError` here, at declaration.
        """
        module = declaring_module(sys._getframe(1))
        calendar: dict[str, Any] = {
            "every": every, "tz": tz, "overlap": overlap, "catch_up": catch_up, "catch_up_window": catch_up_window,
            "jitter": jitter, "start_at": start_at, "end_at": end_at, "paused": paused, "buffer_limit": buffer_limit}
        max_bytes = self.settings.max_payload_bytes

        def decorate(target: T) -> T:
            if isinstance(target, Workflow):
                spec = parse_schedule(name or target.name, cron, **calendar)
                if options:
                    raise ConfigurationError(f"Schedule {spec.name!r}: options= apply to a task's message; a "
                                             "workflow sets them on its steps (ctx.run(task.s().set(queue=...))).")
                self.schedule_book.add(declaration(
                    spec, workflow=target.name, fingerprint=target.fingerprint, target=f"workflow {target.name}",
                    args=args, kwargs=kwargs, module=module, max_bytes=max_bytes))
            elif hasattr(target, "apply_async"):
                task: Any = target
                spec = parse_schedule(name or task.name, cron, **calendar)
                self.schedule_book.add(task_declaration(
                    spec, task.name, args=args, kwargs=kwargs, options=options, module=module,
                    fingerprint=self.runtime.registry.get(TASK_WORKFLOW).fingerprint, max_bytes=max_bytes))
                make_step(self.runtime, task, None)  # the same wrapping as @durable.step, in every process
            else:
                raise ConfigurationError(
                    f"@durable.cron schedules a workflow or a Celery task, not {target!r}; put @durable.workflow "
                    "(or @app.task) below it."
                )
            return target

        return decorate

    def chain(self, *signatures: Any, name: str | None = None) -> DurableChain:
        """A durable drop-in for ``celery.chain``: ``durable.chain(a.s(1), b.s(), c.si()).start()``.

        Operators see the run under ``name``, or under its tasks (``shop.charge_card → shop.send_receipt``).
        """
        return DurableChain(self.runtime, signatures, name)

    @staticmethod
    def sleep(duration: float | str | timedelta) -> ChainSleep:
        """A durable pause inside :meth:`chain`: ``durable.chain(a.s(), durable.sleep("1 hour"), b.s())``.

        It is the same durable timer as ``ctx.sleep`` (the chain's workflow calls it).
        """
        return ChainSleep(duration)

    # --- running -----------------------------------------------------------------------------------------

    def start(self, workflow: str | Workflow[Any, Any], *args: Any, idempotency_key: str | None = None,
              connection: Connection | None = None, on_commit: OnCommit | None = None, **kwargs: Any) -> RunHandle:
        """Start a run of a registered workflow (by object or name) and return its handle at once.

        The run and its first message commit together; if the broker is down the message waits in the
        outbox and the workers' relay sends it later. The same ``idempotency_key`` with the same workflow
        and arguments returns the same run; with others it raises
        :class:`~durable_tasks.IdempotencyConflictError` naming the existing run.

        ``connection`` (a SQLAlchemy ``Connection`` on the store's database) writes the run in the caller's
        open transaction: it starts only if that transaction commits, and its first message leaves after the
        commit (or through ``on_commit``, such as Django's ``transaction.on_commit``). A connection to another
        database raises :class:`~durable_tasks.ConfigurationError`::

            with Session(engine) as session, session.begin():
                session.add(Order(id=42))
                durable.start("shop.checkout", 42, connection=session.connection())
        """
        definition = self.runtime.registry.get(workflow if isinstance(workflow, str) else workflow.name)
        run_id = start_run(self.runtime, definition, args, kwargs, idempotency_key=idempotency_key,
                           connection=connection, on_commit=on_commit)
        return self.run(run_id)

    def run(self, run_id: str) -> RunHandle:
        """The handle of an existing run (it reads the run, and can :meth:`~RunHandle.cancel` it)."""
        return RunHandle(self.store, run_id, self.operations)

    def runs(self, *, status: str | None = None, workflow: str | None = None, since: float | str | None = None,
             error_type: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The latest runs, newest first, filtered by status, workflow (name or chain label), age (``since``,
        ``"1h"``) and error type (``"KeyError"`` or ``"builtins.KeyError"``)::

            for run in durable.runs(status="failed", workflow="shop.checkout", since="1h", error_type="KeyError"):
                durable.resume(run.id)
        """
        created_after = None if since is None else time.time() - parse_duration(since)
        with self.store.read() as conn:
            rows = queries.list_runs(conn, status=status, workflow=workflow, created_after=created_after,
                                     error_type=error_type, limit=limit)
        return [RunRecord.from_row(row) for row in rows]

    def steps(self, run_id: str) -> list[StepRecord]:
        """The journal of a run."""
        return load_steps(self.store, run_id)

    # --- events -------------------------------------------------------------------------------------------

    def send_event(self, run_id: str | None = None, name: str | None = None, payload: Any = None, *,
                   key: str | None = None, event_id: str | None = None, token: str | None = None) -> EventReceipt:
        """Send an outside event to the run that waits for it (``ctx.wait_for_event``); returns its receipt.

        Address it to a run, to a correlation key, or with a token from :meth:`event_token`::

            durable.send_event(run.id, "approved", {"by": "ana"})
            durable.send_event(key="order-42", name="approved", payload={"by": "ana"})
            durable.send_event(token=token_from_the_link, payload={"by": "ana"})

        A run that waits for it gets it at once; otherwise it is kept (``event_retention``) for the first
        wait that matches. The same ``event_id`` sent again is not delivered again (the receipt says
        ``duplicate``). The payload must be JSON. Raises :class:`~durable_tasks.RunNotFoundError` or
        :class:`~durable_tasks.InvalidStateError` for an unknown or finished run,
        :class:`~durable_tasks.PayloadError` for a payload that is not JSON, and
        :class:`~durable_tasks.EventTokenError` for a malformed, altered, expired or used token; nothing
        is stored then.
        """
        return self.events.send(run_id, name, payload, key=key, event_id=event_id, token=token)

    def event_token(self, run_id: str, name: str, *, ttl: float | str | timedelta = "7 days") -> str:
        """A signed token that delivers event ``name`` to run ``run_id`` once, within ``ttl``: for approval links.

        Signed (HMAC-SHA256) with the ``event_secret`` setting; anyone holding it can send that one event,
        nobody can forge or alter one. Pass it back with ``durable.send_event(token=..., payload=...)``::

            token = durable.event_token(run.id, "approved", ttl="2 days")
            link = f"https://shop.example/approve?token={token}"
        """
        return self.events.token(run_id, name, ttl)

    # --- operating ---------------------------------------------------------------------------------------

    def resume(self, run_id: str) -> RunHandle:
        """Continue a failed run at its failed step (after a fix); finished steps never run again."""
        self.operations.resume(run_id)
        return self.run(run_id)

    def retry_step(self, run_id: str, step_key: str) -> RunHandle:
        """Run a failed step, or a step waiting out its retry backoff, again now."""
        self.operations.retry_step(run_id, step_key)
        return self.run(run_id)

    def cancel(self, run_id: str, reason: str = "cancelled by operator", *, terminate: bool = False) -> None:
        """Cancel a run and its child runs; running steps can notice with ``current_step().is_cancelled()``.

        ``terminate=True`` also stops the task steps running now: they are journaled ``cancelled`` and the
        worker running each one terminates it, as ``celery control revoke --terminate`` does (prefork pools;
        other pools cannot terminate a task, and the step only sees ``is_cancelled()``)::

            durable.cancel(run.id, "customer left", terminate=True)
        """
        self.operations.cancel(run_id, reason, terminate=terminate)

    def fork(self, run_id: str, from_step: str) -> RunHandle:
        """A new run that reuses the journal before ``from_step`` and runs the rest on the current code."""
        workflow = self.runtime.registry.find(self.run(run_id).info().workflow)
        return self.run(self.operations.fork(run_id, from_step, workflow.fingerprint if workflow else None))

    def prune(self, older_than: float | str, status: str | None = None) -> int:
        """Delete finished runs older than ``older_than`` (``"30d"``), with their journals."""
        return self.operations.prune(parse_duration(older_than), status)

    # --- schedules ---------------------------------------------------------------------------------------

    def schedules(self, *, include_removed: bool = False) -> list[ScheduleInfo]:
        """Every schedule in the store (``durable cron list``): next and last tick, last run, counts."""
        return self.schedule_operations.overview(include_removed=include_removed)

    def pause_schedule(self, name: str) -> None:
        """Pause a schedule until :meth:`resume_schedule`; its ticks pass without runs (counted as skipped)."""
        self.schedule_operations.pause(name)

    def resume_schedule(self, name: str) -> None:
        """Resume a paused schedule at its current tick; ticks missed while paused are not caught up."""
        self.schedule_operations.resume(name)

    def trigger_schedule(self, name: str) -> RunHandle:
        """Start an extra run of a schedule now, with a key of its own (overlap and pause do not apply)."""
        return self.run(self.schedule_operations.trigger(name))

    def backfill_schedule(self, name: str, start: datetime | float, end: datetime | float) -> list[RunHandle]:
        """Start the ticks from ``start`` to ``end`` with no run yet (naive datetimes: in the schedule's zone)."""
        return [self.run(run_id) for _, run_id in self.schedule_operations.backfill(name, start, end)]

    def sync_schedules(self) -> SyncReport:
        """Write the schedules this process declared to the database (what each worker does when it starts)."""
        return sync_schedules(self.store, self.schedule_book, app=app_scope(self.app))

    def upgrade_database(self) -> None:
        """Create or upgrade the journal tables (what ``durable db upgrade`` does)."""
        self.store.upgrade()
