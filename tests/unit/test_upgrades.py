"""A run started before an upgrade finishes after it: rows written by the previous schema, then the upgrade."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import text

from durable_tasks import Durable
from durable_tasks.outbox import relay
from durable_tasks.store import migrate
from durable_tasks.store.engine import make_engine
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages


def test_a_chain_dispatched_before_revision_0003_finishes_after_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine, revision="0002")
    now = time.time()
    elements = [{"type": "task", "task": "old.add", "args": [1], "kwargs": {}, "options": {}, "immutable": False}]
    request = {"task": "old.add", "args": [41, 1], "kwargs": {}, "options": {}, "retry": None}
    with engine.begin() as conn:  # what version 0.1.0 wrote: no queue, publish time, label or role columns
        conn.execute(text(
            "INSERT INTO durable_runs (id, workflow, status, input, fingerprint, wake_seq, created_at, updated_at) "
            "VALUES ('old-run', 'durable_tasks.chain', 'running', :input, 'f', 0, :now, :now)"),
            {"input": json.dumps({"args": [elements, [41], {}], "kwargs": {}}), "now": now - 3600})
        conn.execute(text(
            "INSERT INTO durable_steps (run_id, position, step_key, kind, name, status, attempt, request, "
            "celery_task_id, created_at, publish_after, publish_count) VALUES ('old-run', 0, 'old.add', 'task', "
            "'old.add', 'dispatched', 1, :request, 'old-task-id', :now, :now, 0)"),
            {"request": json.dumps(request), "now": now - 3600})
    engine.dispose()

    app = Celery("upgraded", broker="memory://", set_as_current=False)
    durable = Durable(app, store=url)  # SQLite upgrades itself on first use

    @durable.step
    @app.task(name="old.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    try:
        broker = KeptMessages()
        durable.runtime.publisher = broker
        assert durable.run("old-run").info().args == [41, 1], "its input reads as the first task's arguments"
        assert migrate.current_revision(durable.store.engine) == migrate.head_revision(durable.store.engine)
        assert relay(durable.store, broker, redelivery_after=60) == 1, "its lost message is sent again"
        (message,) = broker.steps()
        assert (message.task_id, message.args) == ("old-task-id", [41, 1])

        def body(*args: Any, **kwargs: Any) -> Any:
            return add.run(*args, **kwargs)

        assert execute(durable.runtime, add, message, body) == 42
        assert durable.run("old-run").result(timeout=1) == 42
    finally:
        durable.close()
