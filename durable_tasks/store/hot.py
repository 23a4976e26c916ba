"""The hot path's statements, run on the driver's cursor: no SQLAlchemy execution machinery per step.

A task step runs four statements (claim, finish, lock-and-read, dispatch the next one). Through
``Connection.execute`` each costs 15-40 µs of SQLAlchemy work (cache key, parameter processing, result
set-up, events) on top of the driver's own, which is more than SQLite needs to run it. A
:class:`DriverStatement` compiles its SQLAlchemy statement once per dialect and schema and then hands
the SQL text and the parameters to the driver's cursor, inside the transaction that the SQLAlchemy
``Connection`` manages (its ``BEGIN``, ``COMMIT`` and commit counting stay as they are).

Driver errors are raised as SQLAlchemy's (``sqlalchemy.exc.DBAPIError`` and its subclasses), and a lost
connection is invalidated, exactly as ``Connection.execute`` does, so that
:func:`durable_tasks.store.engine.translate_connect_errors` turns it into ``StoreUnavailableError`` and the
pool never hands the dead connection out again. Statements run this way are not seen by
``before_cursor_execute`` listeners.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class DriverStatement:
    """A statement compiled once per (dialect, schema), executed on the driver's cursor.

    ::

        CLAIM = DriverStatement(update(steps).where(...).values(...))
        claimed = CLAIM.execute(conn, {"b_run": run_id, ...}).rowcount == 1
    """

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, str | None], tuple[str, dict[str, Any], tuple[str, ...] | None]] = {}

    def _compile(self, conn: Connection, schema: str | None) -> tuple[str, dict[str, Any], tuple[str, ...] | None]:
        options: dict[str, Any] = {"schema_translate_map": {None: schema}, "render_schema_translate": True} \
            if schema else {}
        compiled = cast(SQLCompiler, self.statement.compile(dialect=conn.dialect, **options))
        if "POSTCOMPILE" in compiled.string:
            raise ValueError(f"{self.statement} has an expanding IN parameter; write its values as literals")
        positional = conn.dialect.paramstyle in ("qmark", "numeric", "format")
        order = tuple(compiled.positiontup or ()) if positional else None
        entry = (compiled.string, dict(compiled.params), order)
        self._compiled[(conn.dialect.name, schema)] = entry
        return entry

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run the statement in ``conn``'s transaction; returns the driver's cursor (rows, ``rowcount``)."""
        translate = conn.get_execution_options().get("schema_translate_map")
        schema = translate.get(None) if translate else None
        entry = self._compiled.get((conn.dialect.name, schema)) or self._compile(conn, schema)
        sql, defaults, order = entry
        values: Any = {**defaults, **params} if defaults else params
        if order is not None:
            values = tuple(values[name] for name in order)
        dbapi_connection = conn.connection.dbapi_connection
        if dbapi_connection is None:
            raise RuntimeError("the connection was closed")
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(sql, values)
        except conn.dialect.loaded_dbapi.Error as exc:
            lost = conn.dialect.is_disconnect(exc, dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(sql, values, exc, conn.dialect.loaded_dbapi.Error, connection_invalidated=lost,
                                      dialect=conn.dialect) from exc
        return cursor
