"""A run started in the application's own PostgreSQL transaction, on a real worker: no order, no run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from durable_tasks import ConfigurationError, RunNotFoundError
from tests.support.stack import POSTGRES_URL, Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def app_engine() -> Iterator[Engine]:
    """The application's engine: the store's database, without the store's schema (the run is put there)."""
    engine = create_engine(POSTGRES_URL)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("stack", ["postgresql"], indirect=True)
def test_the_run_commits_with_the_order_or_not_at_all(stack: Stack, app_engine: Engine) -> None:
    basic = stack.client.workflows["basic"]
    with app_engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE orders (id int) ON COMMIT DROP"))
        conn.execute(text("INSERT INTO orders VALUES (1)"))
        handle = basic.start(1, connection=conn, idempotency_key=f"order-1-{stack.tag}")
        assert stack.outbox(handle.id) == [], "invisible to others until the caller commits"
    assert handle.result(timeout=30)["a"] == 2
    with pytest.raises(RuntimeError), Session(app_engine) as session, session.begin():
        rolled_back = basic.start(2, connection=session.connection(), idempotency_key=f"order-2-{stack.tag}")
        raise RuntimeError("the order failed")
    with pytest.raises(RunNotFoundError):
        rolled_back.info()
    assert stack.outbox(rolled_back.id) == []
    other = create_engine(POSTGRES_URL.rsplit("/", 1)[0] + "/postgres")
    try:
        with other.begin() as conn, pytest.raises(ConfigurationError, match="store's own database"):
            basic.start(3, connection=conn)
    finally:
        other.dispose()
