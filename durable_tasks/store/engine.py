"""Engines for the journal: SQLite (embedded default) and PostgreSQL, with the same behaviour.

SQLite write transactions start with ``BEGIN IMMEDIATE`` so that two processes never both read a run and
then race to write it; PostgreSQL uses row locks taken by ``UPDATE ... RETURNING``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from ..errors import ConfigurationError, SchemaError, StoreUnavailableError

DEFAULT_SQLITE_PATH = "durable.sqlite3"
READ_ONLY_OPTION = "durable_read_only"
SQLITE_SYNCHRONOUS_LEVELS = ("full", "normal")


def default_store_url() -> str:
    """The store used when none is configured: ``$DURABLE_STORE`` or a SQLite file in the working dir."""
    return os.environ.get("DURABLE_STORE") or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def redact(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def check_sqlite_synchronous(value: str) -> str:
    """``value`` as a valid ``PRAGMA synchronous`` level for the journal (``"full"`` or ``"normal"``).

    Raises :class:`ConfigurationError` for anything else.
    """
    level = value.lower() if isinstance(value, str) else value
    if level not in SQLITE_SYNCHRONOUS_LEVELS:
        raise ConfigurationError(
            f"sqlite_synchronous is {value!r}; use 'full' (the default: a commit is on disk before a step counts "
            "as done) or 'normal' (faster commits, but a power loss may undo the last ones, so a step that was "
            "journaled may run again)."
        )
    return level


def _install_sqlite_behaviour(engine: Engine, synchronous: str, existing_file: Path | None) -> None:
    if existing_file is not None:
        # mode=rw: SQLite opens the file but never creates it, even if it vanishes after make_engine checked.
        uri = f"{existing_file.as_uri()}?mode=rw"

        @event.listens_for(engine, "do_connect")
        def _open_existing(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
            cargs[:] = [uri]
            cparams["uri"] = True

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL also syncs the WAL on every commit: in WAL mode NORMAL may lose the last commits on power
        # loss (never corrupts), and a lost step result means the step runs again.
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers (Store.read) must not block them.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, resolved; None for in-memory and ``file:`` URI databases."""
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def _require_existing(url: str, path: Path) -> None:
    if path.is_file():
        return
    missing = f"no folder {path.parent}" if not path.parent.is_dir() else f"no file {path}"
    raise SchemaError(
        f"The durable store {redact(url)} does not exist ({missing}); reading never creates it. "
        f"Create it with: {upgrade_command(make_url(url))}"
    )


def upgrade_command(url: URL, schema: str | None = None) -> str:
    """The ``durable db upgrade`` command line for this store, quoted for a POSIX shell.

    A relative SQLite path becomes absolute, so the command works from any directory; a password stays
    hidden (``***``), so the command then says where to put it.
    """
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
        url = url.set(database=os.path.abspath(database))
    words = ["durable", "db", "upgrade", "--store", redact(url.render_as_string(hide_password=False))]
    if schema:
        words += ["--schema", schema]
    line = shlex.join(words)
    return line + " (put the password in place of ***)" if url.password else line


def _postgres_url(url: str, parsed: URL) -> URL:
    """``parsed`` with psycopg 3 as the driver; ``postgres://`` (what hosting providers hand out) included."""
    driver = parsed.get_driver_name() if "+" in parsed.drivername else "psycopg"
    corrected = parsed.set(drivername="postgresql+psycopg")
    if driver != "psycopg":
        raise ConfigurationError(
            f"The store URL {redact(url)!r} asks for the PostgreSQL driver {driver!r}, but durable-tasks talks "
            f"to PostgreSQL through psycopg 3. Write it as {corrected.render_as_string(hide_password=True)!r} "
            '(psycopg 3 comes with: pip install "durable-tasks[postgres]").'
        )
    return corrected


def make_engine(url: str, *, schema: str | None = None, echo: bool = False, create: bool = True,
                sqlite_synchronous: str = "full", **overrides: Any) -> Engine:
    """Create the engine for a store URL; ``schema`` puts the tables in a PostgreSQL schema.

    ``create=False`` is for readers: a SQLite file (or its folder) that does not exist raises
    :class:`~durable_tasks.errors.SchemaError` and nothing is created; with ``create=True`` (writers) the
    folder is made now and the file on first connect. ``sqlite_synchronous`` is SQLite's
    ``PRAGMA synchronous`` (``"full"`` or ``"normal"``). ``overrides`` go to ``create_engine``
    (``isolation_level``, ``connect_args``, ``pool_size``).
    ``postgres://`` and ``postgresql://`` URLs use psycopg 3::

        engine = make_engine("sqlite:///data/journal.sqlite3", create=False)  # SchemaError if missing
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"The store URL {url!r} is not a database URL: {exc}") from exc
    sqlite_synchronous = check_sqlite_synchronous(sqlite_synchronous)
    options: dict[str, Any] = {"echo": echo, "future": True}
    backend = parsed.get_backend_name()
    existing_file: Path | None = None
    if backend == "sqlite":
        if schema:
            raise ConfigurationError("A schema name is only supported on PostgreSQL stores, not on SQLite.")
        path = sqlite_file(parsed)
        if path is not None and create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif path is not None:
            _require_existing(url, path)
            existing_file = path
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
    elif backend in ("postgresql", "postgres"):
        # No pool_pre_ping: it costs a round trip per transaction. A connection lost to a database
        # restart fails its statement, is invalidated, and the caller's retry gets a fresh one.
        options.update(pool_size=10, max_overflow=20)
        parsed = _postgres_url(url, parsed)
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
        _install_sqlite_behaviour(engine, sqlite_synchronous, existing_file)
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
