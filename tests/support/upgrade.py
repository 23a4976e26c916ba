"""A run journaled by version 0.2 (before child runs existed) finishing after the upgrade, on any store."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy
from celery import Celery

from durable_tasks import Durable
from durable_tasks.coordinator import advance
from durable_tasks.store import migrate

from .engine import pump
from .publisher import KeptMessages


def insert_run_before_children(conn: sqlalchemy.Connection) -> None:
    """A run of the previous version whose first advance has not happened yet: its message is still queued."""
    conn.execute(sqlalchemy.text(
        "INSERT INTO durable_runs (id, workflow, status, input, fingerprint, wake_seq, created_at, updated_at) "
        "VALUES ('old-run', 'old.parent', 'pending', :input, 'f', 0, :now, :now)"),
        {"input": json.dumps({"args": [20], "kwargs": {}}), "now": time.time()})


def finish_run_with_a_child(app: Celery, schema: str | None = None, **store: Any) -> None:
    """Open the upgraded store, deliver the queued advance and check the old run finishes through a child."""
    durable = Durable(app, schema=schema, **store)
    try:
        broker = KeptMessages()
        durable.runtime.publisher = broker

        @durable.workflow(name="old.child")
        def child(ctx: Any, n: int) -> int:
            return n + 1

        @durable.workflow(name="old.parent")
        def parent(ctx: Any, n: int) -> int:
            return int(ctx.run_child(child, n)) * 2

        assert durable.run("old-run").info().parent_id is None
        assert migrate.current_revision(durable.store.engine, schema) == migrate.head_revision(durable.store.engine)
        advance(durable.runtime, "old-run")
        pump(durable, broker)
        assert durable.run("old-run").result(timeout=1) == 42
        (kid,) = durable.run("old-run").children()
        info = kid.info()
        assert (info.parent_id, info.parent_position) == ("old-run", 0) and kid.result(timeout=1) == 21
    finally:
        durable.close()
