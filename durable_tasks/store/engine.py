"""Engines for the journal: SQLite (embedded default) and PostgreSQL, with the same behaviour.

SQLite write transactions start with ``BEGIN IMMEDIATE`` so that two processes never both read a run and
then race to write it; PostgreSQL uses row locks taken by ``UPDATE ... RETURNING``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from ..errors import ConfigurationError, StoreUnavailableError

DEFAULT_SQLITE_PATH = "durable.sqlite3"
READ_ONLY_OPTION = "durable_read_only"


def default_store_url() -> str:
    """The store used when none is configured: ``$DURABLE_STORE`` or a SQLite file in the working dir."""
    return os.environ.get("DURABLE_STORE") or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def redact(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _install_sqlite_behaviour(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers (Store.read) must not block them.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str, *, schema: str | None = None, echo: bool = False, **overrides: Any) -> Engine:
    """Create the engine for a store URL; ``schema`` puts the tables in a PostgreSQL schema.

    ``overrides`` go to ``create_engine`` (``isolation_level``, ``connect_args``, ``pool_size``).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"The store URL {url!r} is not a database URL: {exc}") from exc
    options: dict[str, Any] = {"echo": echo, "future": True}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if schema:
            raise ConfigurationError("A schema name is only supported on PostgreSQL stores, not on SQLite.")
    elif backend == "postgresql":
        # No pool_pre_ping: it costs a round trip per transaction. A connection lost to a database
        # restart fails its statement, is invalidated, and the caller's retry gets a fresh one.
        options.update(pool_size=10, max_overflow=20)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
    else:
        raise ConfigurationError(
            f"The store URL {redact(url)!r} uses {backend!r}; durable-tasks supports sqlite:/// and "
            "postgresql+psycopg:// stores."
        )
    options.update(overrides)
    try:
        engine = create_engine(parsed, **options)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigurationError(
            f"The driver for {redact(url)!r} is not installed ({exc}). "
            'For PostgreSQL run: pip install "durable-tasks[postgres]"'
        ) from exc
    if backend == "sqlite":
        _install_sqlite_behaviour(engine)
    if schema:
        engine = engine.execution_options(schema_translate_map={None: schema})
    # Pooled connections must not cross a fork (prefork pool children).
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return engine


@contextmanager
def translate_connect_errors(url: str) -> Iterator[None]:
    """Turn driver connection failures into :class:`StoreUnavailableError` with the URL and a hint."""
    try:
        yield
    except OperationalError as exc:
        if exc.connection_invalidated or _looks_like_connect_failure(exc):
            raise StoreUnavailableError(
                f"Cannot reach the durable store at {redact(url)}: {exc.orig}. Check that the database "
                "is running and the URL is right; no journaled data was changed."
            ) from exc
        raise
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailableError(
                f"Lost the connection to the durable store at {redact(url)}: {exc.orig}. "
                "The transaction was rolled back; it is safe to retry."
            ) from exc
        raise


def _looks_like_connect_failure(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return any(
        marker in text
        for marker in ("connection refused", "could not connect", "unable to open database",
                       "connection failed", "server closed", "terminating connection",
                       "no such host", "name or service not known", "timeout expired")
    )
