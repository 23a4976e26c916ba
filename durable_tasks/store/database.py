"""The :class:`Store`: one engine, short write transactions, and clear errors when the database fails."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import make_url

from . import migrate
from .engine import READ_ONLY_OPTION, make_engine, redact, sqlite_file, translate_connect_errors


class Store:
    """The journal database of one :class:`~durable_tasks.Durable` instance.

    ``auto_migrate`` creates or upgrades the tables on first use; otherwise the first use checks that the
    database is at the library's migration head and raises :class:`~durable_tasks.errors.SchemaError`
    with the command to run.

    A store creates a SQLite file only where it creates the tables: with ``auto_migrate`` or in
    :meth:`upgrade`. Any other store is a reader: a missing file raises ``SchemaError`` and nothing is left
    behind. ``sqlite_synchronous`` is SQLite's ``PRAGMA synchronous`` (``"full"`` or ``"normal"``)::

        with Store("sqlite:///journal.sqlite3").read() as conn:  # SchemaError if the file does not exist
            ...
    """

    def __init__(self, url: str, *, schema: str | None = None, auto_migrate: bool = False,
                 sqlite_synchronous: str = "full") -> None:
        self.url = url
        self.schema = schema
        self.auto_migrate = auto_migrate
        self.sqlite_synchronous = sqlite_synchronous
        self._creates = auto_migrate
        self._engine: Engine | None = None
        self._autocommit_engine: Engine | None = None
        self._ready = False
        self._engine_lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self.commits = 0  # every commit, autocommit ones included (the benchmark's commits per step)
        self.autocommit_commits = 0  # of which committed without waiting for the disk

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    engine = make_engine(self.url, schema=self.schema, create=self._creates,
                                         sqlite_synchronous=self.sqlite_synchronous)
                    event.listen(engine, "commit", self._count_commit)
                    self._engine = engine
        return self._engine

    def _count_commit(self, _conn: Connection) -> None:
        self.commits += 1

    def redacted_url(self) -> str:
        return redact(self.url)

    def ensure_ready(self) -> None:
        """Create/upgrade (``auto_migrate``) or check the schema, once per process."""
        if self._ready:
            return
        with self._schema_lock:
            if self._ready:
                return
            with translate_connect_errors(self.url):
                if self.auto_migrate:
                    migrate.upgrade(self.engine, self.schema)
                else:
                    migrate.check(self.engine, self.schema)
            self._ready = True

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One write transaction: commits on success, rolls back on any error.

        Connection failures surface as :class:`~durable_tasks.errors.StoreUnavailableError`.
        """
        self.ensure_ready()
        with translate_connect_errors(self.url), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """Writes that recovery does not depend on (a step's claim, a heartbeat): they commit without waiting
        for the disk.

        On PostgreSQL every statement commits by itself (autocommit, one round trip) without waiting for
        the disk (``synchronous_commit=off``): a database crash may lose such a write, never corrupt
        anything, and a lost claim only makes the relay send the step again. On SQLite it is a transaction
        on a connection with ``synchronous=NORMAL``: in WAL mode its commit is not synced, and the next
        commit made with ``FULL`` syncs it along with its own (the WAL is one file, written in order).
        """
        self.ensure_ready()
        if self._autocommit_engine is None:
            with self._engine_lock:
                if self._autocommit_engine is None:
                    self._autocommit_engine = self._make_autocommit_engine()
        if self._autocommit_engine is self._engine:  # an in-memory SQLite store: one database, one engine
            with self.begin() as conn:
                yield conn
            return
        if self.dialect != "postgresql":
            with translate_connect_errors(self.url), self._autocommit_engine.begin() as conn:
                yield conn
        else:
            with translate_connect_errors(self.url), self._autocommit_engine.connect() as conn:
                yield conn
        self.commits += 1
        self.autocommit_commits += 1

    def _make_autocommit_engine(self) -> Engine:
        if self.dialect != "postgresql":
            if sqlite_file(make_url(self.url)) is None:  # a second engine would open another database
                return self.engine
            return make_engine(self.url, schema=self.schema, create=self._creates, sqlite_synchronous="normal",
                               pool_size=2)
        return make_engine(self.url, schema=self.schema, isolation_level="AUTOCOMMIT",
                           connect_args={"options": "-c synchronous_commit=off"}, pool_size=2)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads only (no explicit transaction on PostgreSQL)."""
        self.ensure_ready()
        with translate_connect_errors(self.url), self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY_OPTION: True})
            yield conn

    def upgrade(self) -> None:
        """Create the store if needed and apply every missing migration (``durable db upgrade``)."""
        self._creates = True  # an engine opened before exists only if the file did: it can be upgraded in place
        with translate_connect_errors(self.url):
            migrate.upgrade(self.engine, self.schema)
        self._ready = True

    def dispose(self) -> None:
        for engine in (self._engine, self._autocommit_engine):
            if engine is not None:
                engine.dispose()
