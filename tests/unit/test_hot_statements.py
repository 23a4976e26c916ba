"""The hot path's statements on the driver's cursor behave like ``Connection.execute`` for their callers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError

from durable_tasks.store.database import Store
from durable_tasks.store.hot import DriverStatement
from durable_tasks.store.schema import steps


def test_driver_errors_are_sqlalchemy_errors_and_the_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'journal.sqlite3'}", auto_migrate=True)
    from durable_tasks.store import queries

    def insert(conn: Connection, run: str = "r") -> None:
        queries.insert_run(conn, id=run, workflow="w", status="running", input="{}", fingerprint="f",
                           created_at=1.0, updated_at=1.0)

    row = {"run_id": "r", "position": 0, "step_key": "k", "kind": "task", "name": "t", "status": "dispatched",
           "created_at": 1.0}
    with store.begin() as conn:
        insert(conn)
        queries.insert_step(conn, **row)
    with pytest.raises(IntegrityError), store.begin() as conn:  # callers catch SQLAlchemy's errors
        queries.insert_step(conn, **{**row, "step_key": "other"})
    with store.read() as conn:
        assert [tuple(found) for found in conn.execute(select(steps.c.step_key))] == [("k",)]
    store.dispose()


def test_a_statement_with_an_expanding_in_is_refused_when_compiled(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'journal.sqlite3'}", auto_migrate=True)
    statement = DriverStatement(select(steps.c.position).where(steps.c.status.in_(bindparam("statuses",
                                                                                             expanding=True))))
    with pytest.raises(ValueError, match="expanding IN"), store.begin() as conn:
        statement.execute(conn, {"statuses": ["dispatched"]})
    store.dispose()
