"""Starting a run inside the caller's transaction: the run commits with the caller's rows, or not at all.

``start(..., connection=conn)`` writes the run and its first message's outbox row through ``conn``, a SQLAlchemy
``Connection`` on the store's database, in the transaction the caller has open. The message leaves only after
that transaction commits: :func:`after_commit` watches the connection (its ``commit`` event, then the first
moment the commit is over: the connection's next transaction, or its return to the pool), or the caller passes
its own hook (Django's ``transaction.on_commit``). A rollback drops the message with the run. If the process
dies between the commit and the publish, the row is in the outbox and the relay sends it.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import Pool

from .errors import ConfigurationError
from .outbox import Publisher, UnitOfWork
from .outgoing import TopicSource
from .store.database import Store
from .store.engine import redact

OnCommit = Callable[[Callable[[], None]], Any]
"""A hook that runs a callback once the caller's transaction has committed (``transaction.on_commit``)."""

_HOOKS_KEY = "durable_tasks.after_commit"


class JoinedUnitOfWork(UnitOfWork):
    """A unit of work inside the caller's open transaction: it never commits or rolls back that transaction.

    Its writes go through the caller's connection (with the store's schema), inside a savepoint when
    ``savepoint`` (so a lost race on an idempotency key leaves the caller's transaction usable). Its messages
    and transitions wait for ``on_commit``.
    """

    def __init__(self, store: Store, publisher: Publisher, connection: Connection, on_commit: OnCommit, *,
                 redelivery_after: float, topics: TopicSource | None = None, savepoint: bool = False,
                 **options: Any) -> None:
        super().__init__(store, publisher, redelivery_after=redelivery_after, topics=topics, **options)
        self.connection = connection
        self.on_commit = on_commit
        self.savepoint = savepoint
        self._nested: Any = None
        self._schema_map: Any = None

    def begin(self) -> JoinedUnitOfWork:
        if self.store.schema:
            self._schema_map = self.connection.get_execution_options().get("schema_translate_map")
            self.connection.execution_options(schema_translate_map={None: self.store.schema})
        self._nested = self.connection.begin_nested() if self.savepoint else None
        self._transaction = contextlib.nullcontext(self.connection)
        self._conn = self.connection
        return self

    def _leave(self) -> None:
        if self.store.schema:
            self.connection.execution_options(schema_translate_map=self._schema_map)
        self._transaction = self._conn = None

    def commit(self) -> None:
        """End this unit's part; what it wrote is published once the caller's transaction commits."""
        if self._nested is not None:
            self._nested.commit()
        self._leave()
        self.on_commit(self.committed)

    def rollback(self, exc: BaseException) -> None:
        if self._nested is not None:
            self._nested.rollback()
        self._leave()
        super().rollback(exc)


def check_same_database(store: Store, connection: Connection) -> None:
    """Refuse a connection that is not on the store's database, naming both (passwords hidden)."""
    theirs = connection.engine.url
    ours = make_url(store.url)
    if _identity(theirs) == _identity(ours):
        return
    raise ConfigurationError(
        f"start(connection=...) got a connection to {redact(theirs.render_as_string(hide_password=False))}, but "
        f"the durable store is {store.redacted_url()}: a run can join only a transaction on the store's own "
        "database. Pass a connection of an engine on the store's database (durable.store.engine.connect(), or "
        "your engine on the same URL), or start without connection=."
    )


def _identity(url: URL) -> tuple[Any, ...]:
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return (backend, database)
        return (backend, str(Path(database).expanduser().resolve()))
    backend = "postgresql" if backend in ("postgres", "postgresql") else backend
    host = url.host or "localhost"
    return (backend, "localhost" if host in ("127.0.0.1", "::1") else host, url.port or 5432, url.database)


def after_commit(connection: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the transaction open on ``connection`` has committed; never if it rolls back.

    SQLAlchemy announces a commit before the database has it (the ``commit`` event), so the callback waits for
    the first sign that the commit is over: the connection's next ``begin``, or its return to the pool (the end
    of ``with engine.begin()``, ``Session.commit()``). A connection kept open and idle after its commit gets
    its message from the relay instead (``redelivery_after``).
    """
    _hooks_of(connection).pending.append(callback)


class _Hooks:
    """The after-commit callbacks of one connection: registered once per ``Connection`` object."""

    def __init__(self, connection: Connection) -> None:
        self.pending: list[Callable[[], None]] = []
        self.committed: list[Callable[[], None]] = []
        event.listen(connection, "commit", self._committing)
        event.listen(connection, "rollback", self._rolled_back)
        event.listen(connection, "begin", self._began)

    def _committing(self, _connection: Connection) -> None:
        self.committed.extend(self.pending)
        self.pending.clear()

    def _rolled_back(self, _connection: Connection) -> None:
        self.pending.clear()
        self.committed.clear()  # a commit that failed is followed by a rollback: nothing was committed

    def _began(self, _connection: Connection) -> None:
        self.fire()

    def fire(self) -> None:
        """Run the callbacks of the committed transaction (each once)."""
        callbacks, self.committed = self.committed, []
        for callback in callbacks:
            callback()


_registry: weakref.WeakKeyDictionary[Connection, _Hooks] = weakref.WeakKeyDictionary()
_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
_lock = threading.Lock()


def _hooks_of(connection: Connection) -> _Hooks:
    with _lock:
        hooks = _registry.get(connection)
        if hooks is None:
            hooks = _registry[connection] = _Hooks(connection)
        pool = connection.engine.pool
        if pool not in _pools:
            event.listen(pool, "checkin", _checked_in)
            _pools.add(pool)
    connection.connection.info[_HOOKS_KEY] = hooks
    return hooks


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    hooks: _Hooks | None = record.info.pop(_HOOKS_KEY, None) if record is not None else None
    if hooks is not None:
        hooks.pending.clear()  # closed with its transaction open: rolled back
        hooks.fire()
