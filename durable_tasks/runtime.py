"""The runtime: what the engine modules need from a :class:`~durable_tasks.Durable` instance, and no more.

The coordinator, the step wrapper, the timers, the sweeper and the Celery glue each receive a
:class:`Runtime` (settings, store, identity, registry, publisher, topics, observers) instead of the front-door
object, so none of them imports ``app.py`` and each can be exercised on its own (the unit tests run them on
SQLite without a worker or a broker).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from .config import Settings
from .errors import ConfigurationError, UnknownTaskError
from .heartbeat import ProcessIdentity
from .journal import JournalCache
from .observe import Observer
from .outbox import Publisher, UnitOfWork
from .outgoing import LazyTopics
from .registry import Registry, StepDefinition, step_definition
from .store import queries
from .store.database import Store
from .tracing import Tracing
from .vocabulary import RunStatus


class Runtime:
    """Settings, store, identity, registry, publisher, observers, tracing and the journal cache of one
    ``Durable`` instance."""

    def __init__(self, app: Celery, settings: Settings, publisher: Publisher) -> None:
        self.app = app
        self.settings = settings
        self.store = Store(settings.store, schema=settings.schema, auto_migrate=settings.migrate_automatically,
                           sqlite_synchronous=settings.sqlite_synchronous)
        self.registry = Registry()
        self.publisher = publisher
        self.identity = ProcessIdentity(self.store, interval=settings.heartbeat_interval,
                                        lease=settings.worker_timeout)
        self.observers: list[Observer] = []
        self.timer_window: float | None = None
        """Set by a timer transport (Kafka): timers due within this window are handed to it when written."""
        self.tracing = Tracing()
        self.topics = LazyTopics(settings.kafka_servers, {**settings.kafka_options, **(settings.kafka_producer or {})})
        """The Kafka producer of the user's records (``ctx.publish``), created on first use."""
        self.journals = JournalCache()

    def unit_of_work(self, *, autocommit: bool = False) -> UnitOfWork:
        """A write transaction whose messages are published, and transitions observed, after commit."""
        return UnitOfWork(self.store, self.publisher, redelivery_after=self.settings.redelivery_after,
                          observers=self.observers, autocommit=autocommit, timer_window=self.timer_window,
                          topics=self.topics)

    def step_task(self, name: str, *, step_key: str, run_id: str) -> tuple[Any, StepDefinition]:
        """The registered Celery task ``name`` and its step definition, for step ``step_key`` of a run."""
        task = self.app.tasks.get(name)
        if task is None:
            raise UnknownTaskError(
                f"Step {step_key!r} of run {run_id} asks for Celery task {name!r}, which is not registered in "
                "this process. Check the name, and import the module that defines it in every worker (Celery's "
                "include/imports)."
            )
        definition = step_definition(task)
        if definition is None:
            raise ConfigurationError(
                f"Step {step_key!r} of run {run_id}: Celery task {name!r} is not a durable step, so its result "
                "could not be journaled. Decorate it with @durable.step (above @app.task)."
            )
        return task, definition

    def is_cancelled(self, run_id: str) -> bool:
        """True once the run was cancelled (read from the journal)."""
        with self.store.read() as conn:
            row = queries.get_run(conn, run_id)
        return row is not None and row.status == RunStatus.CANCELLED
