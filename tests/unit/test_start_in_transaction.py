"""Starting a run inside the caller's transaction (``connection=``), on SQLite with the broker played by hand.

The caller's engine is its own (as an application's would be), on the store's database file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from durable_tasks import ConfigurationError, Durable
from durable_tasks.messages import AdvanceMessage
from tests.support.publisher import KeptMessages


@pytest.fixture
def broker(durable: Durable) -> KeptMessages:
    kept = KeptMessages()
    durable.runtime.publisher = kept
    return kept


@pytest.fixture
def engine(durable: Durable) -> Iterator[Engine]:
    """The application's engine on the store's database, with a table of its own."""
    durable.store.ensure_ready()  # on SQLite, before the caller holds the write lock (see docs/concepts.md)
    own = create_engine(durable.store.url)
    with own.begin() as conn:
        conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
    yield own
    own.dispose()


@pytest.fixture
def checkout(durable: Durable, tasks: dict[str, Any]) -> Any:
    @durable.workflow(name="unit.checkout")
    def checkout(ctx: Any, order: int) -> Any:
        return ctx.run(tasks["add"], order, 1)

    return checkout


def advances(broker: KeptMessages) -> list[str]:
    return [message.run_id for message in broker.messages if isinstance(message, AdvanceMessage)]


def test_a_commit_starts_the_run_and_its_message_leaves_after_the_commit(
        durable: Durable, broker: KeptMessages, engine: Engine, checkout: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO orders (id) VALUES (42)"))
        handle = checkout.start(42, connection=conn)
        assert broker.messages == [], "nothing leaves before the caller's commit"
    assert advances(broker) == [handle.id]
    assert handle.status == "pending"
    assert durable.runs()[0].id == handle.id


def test_a_rollback_leaves_no_run_and_no_message(
        durable: Durable, broker: KeptMessages, engine: Engine, checkout: Any) -> None:
    with pytest.raises(ValueError), engine.begin() as conn:
        conn.execute(text("INSERT INTO orders (id) VALUES (43)"))
        checkout.start(43, connection=conn)
        raise ValueError("payment declined")
    assert broker.messages == []
    assert durable.runs() == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM orders")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM durable_outbox")).scalar() == 0


def test_a_session_starts_runs_and_chains_with_its_commit(
        durable: Durable, broker: KeptMessages, engine: Engine, checkout: Any, tasks: dict[str, Any]) -> None:
    with Session(engine) as session, session.begin():
        session.execute(text("INSERT INTO orders (id) VALUES (44)"))
        run = durable.start("unit.checkout", 44, connection=session.connection())
        chain = durable.chain(tasks["add"].s(1, 2), tasks["add"].s(3)).start(connection=session.connection())
        assert broker.messages == []
    assert advances(broker) == [run.id, chain.id], "a joined chain is advanced by a worker"
    with pytest.raises(ValueError), Session(engine) as session, session.begin():
        durable.start("unit.checkout", 45, connection=session.connection())
        raise ValueError("rolled back")
    assert len(durable.runs()) == 2 and len(advances(broker)) == 2


def test_a_connection_kept_open_sends_at_its_next_transaction_or_when_it_closes(
        broker: KeptMessages, engine: Engine, checkout: Any) -> None:
    conn = engine.connect()
    first = checkout.start(1, connection=conn)
    conn.commit()
    assert broker.messages == [], "SQLAlchemy says 'commit' before the database has it: wait for the next sign"
    conn.execute(text("SELECT 1"))  # the next transaction begins: the commit is over
    assert advances(broker) == [first.id]
    second = checkout.start(2, connection=conn)
    conn.commit()
    conn.close()
    assert advances(broker) == [first.id, second.id]


def test_an_own_hook_publishes_when_it_is_called(broker: KeptMessages, engine: Engine, checkout: Any) -> None:
    hooks: list[Callable[[], None]] = []
    with engine.begin() as conn:
        handle = checkout.start(7, connection=conn, on_commit=hooks.append)  # like transaction.on_commit
    assert broker.messages == [] and len(hooks) == 1
    hooks[0]()
    assert advances(broker) == [handle.id]


def test_the_idempotency_key_finds_the_run_in_the_same_transaction(
        broker: KeptMessages, engine: Engine, checkout: Any) -> None:
    with engine.begin() as conn:
        first = checkout.start(8, connection=conn, idempotency_key="order-8")
        again = checkout.start(8, connection=conn, idempotency_key="order-8")
    assert first.id == again.id and advances(broker) == [first.id]


def test_a_connection_to_another_database_is_refused(durable: Durable, checkout: Any, tmp_path: Path) -> None:
    other = create_engine(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    with other.begin() as conn, pytest.raises(ConfigurationError, match="store's own database"):
        checkout.start(9, connection=conn)
    other.dispose()
