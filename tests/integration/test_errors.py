"""Bad configuration and dead services: a clear error, and no journaled data lost."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
import sqlalchemy
from celery import Celery

from durable_tasks import Durable, SchemaError, StoreUnavailableError
from tests.support.stack import POSTGRES_URL, Stack

pytestmark = pytest.mark.integration


def test_unreachable_postgresql_names_the_url_and_changes_nothing(services: None) -> None:
    app = Celery("dead-db", broker="memory://", set_as_current=False)
    durable = Durable(app, store="postgresql+psycopg://postgres:secret@127.0.0.1:1/test", auto_migrate=True)

    @durable.workflow(name="dead.flow")
    def flow(ctx: Any) -> None: ...

    with pytest.raises(StoreUnavailableError) as error:
        flow.start()
    message = str(error.value)
    assert "127.0.0.1:1" in message and "secret" not in message and "no journaled data was changed" in message


def test_postgresql_without_migrations_says_how_to_create_them(services: None) -> None:
    schema = f"dt_empty_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        app = Celery("no-tables", broker="memory://", set_as_current=False)
        durable = Durable(app, store=POSTGRES_URL, schema=schema)
        with pytest.raises(SchemaError, match=f"durable db upgrade --store .* --schema {schema}"):
            durable.runs()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


def test_dead_broker_at_start_keeps_the_run_and_the_relay_sends_it_later(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    # A second client of the same store whose broker is down (nothing listens on port 1).
    offline = Celery("offline", broker="redis://127.0.0.1:1/0", set_as_current=False)
    offline.conf.broker_connection_retry = False
    offline.conf.broker_transport_options = {"max_retries": 0}
    offline_durable = Durable(offline, store=stack.store, schema=stack.schema, redelivery_after=3)
    tasks = stack.client.tasks
    offline_durable.step(offline.task(name="t.add", shared=False)(tasks["add"].run))
    with caplog.at_level(logging.WARNING, logger="durable_tasks.outbox"):
        handle = offline_durable.chain(offline.signature("t.add", args=(2, 3))).start()
    assert "stays in the outbox" in caplog.text
    assert handle.status == "running"
    step = stack.step(handle.id, "t.add")
    assert step.status == "dispatched", "the dispatched step row keeps the message for the relay"
    # The workers' relay (connected to the live broker) sends it once redelivery_after has passed.
    assert stack.durable.run(handle.id).result(timeout=30) == 5
    offline_durable.close()


def test_a_worker_without_the_workflow_leaves_the_run_pending_and_nothing_is_lost(
        stack: Stack) -> None:
    @stack.durable.workflow(name="wf.client_only")
    def client_only(ctx: Any) -> int:
        return 1

    handle = client_only.start()
    time.sleep(2)
    assert handle.status == "pending"
    assert [row.kind for row in stack.outbox(handle.id)] == ["advance"], "kept for a worker that has the code"
    logs = "".join(path.read_text() for path in stack.directory.glob("w*.log"))
    assert "needs workflow 'wf.client_only', which is not registered" in logs
    stack.durable.cancel(handle.id)
