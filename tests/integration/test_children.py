"""Child runs on a real worker, on SQLite and PostgreSQL: fan-out and fan-in, links, and a parent's cancel."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import sqlalchemy
from celery import Celery
from click.testing import CliRunner

from durable_tasks import Durable
from durable_tasks.cli import main
from durable_tasks.coordinator import advance
from durable_tasks.store import migrate
from durable_tasks.store.engine import make_engine
from tests.support.engine import pump
from tests.support.publisher import KeptMessages
from tests.support.stack import POSTGRES_URL, Stack

pytestmark = pytest.mark.integration


def test_a_parent_gathers_three_children_and_show_links_them(stack: Stack) -> None:
    handle = stack.durable.start("wf.parcels", 3, 0.05)
    assert handle.result(timeout=30) == [0, 1, 2, "all shipped"]
    children = handle.children()
    assert len(children) == 3 and all(child.status == "succeeded" for child in children)
    assert [stack.execution_counts(child.id)["t.slow"] for child in children] == [1, 1, 1]
    store = ["--store", stack.store, *(["--schema", stack.schema] if stack.schema else [])]
    shown = json.loads(CliRunner().invoke(main, ["runs", "show", handle.id, "--json", *store]).output)
    assert [child["run_id"] for child in shown["children"]] == [child.id for child in children]
    up = json.loads(CliRunner().invoke(main, ["runs", "show", children[2].id, "--json", *store]).output)
    assert (up["parent"]["run_id"], up["parent"]["step_key"]) == (handle.id, "wf.parcel#3")


def test_cancelling_a_parent_cancels_its_children(stack: Stack) -> None:
    handle = stack.durable.start("wf.parcels", 2, 0.1, 60)  # each child sleeps a minute before its step
    stack.wait_until(lambda: len(children := handle.children()) == 2 and all(
        child.status == "sleeping" for child in children), 20, "the children to sleep")
    handle.cancel("order withdrawn")
    children = handle.children()
    stack.wait_until(lambda: all(child.status == "cancelled" for child in children), 20,
                     "the children to be cancelled")
    assert handle.status == "cancelled" and [step.status for step in handle.steps()] == ["cancelled"] * 2
    for child in children:
        assert (child.info().error or {})["message"] == f"its parent run {handle.id} was cancelled: order withdrawn"
        assert [step.status for step in child.steps()] == ["cancelled"], "its timer ended with it"
        assert stack.executions_of(child.id) == []


def test_a_run_started_before_revision_0006_on_postgresql_finishes_after_it_with_a_child(services: None) -> None:
    schema = f"dt_children_{uuid.uuid4().hex[:8]}"
    engine = make_engine(POSTGRES_URL, schema=schema)
    migrate.upgrade(engine, schema, revision="0005_schedules")
    with engine.begin() as conn:  # a run of the previous version, its first advance still queued
        conn.exec_driver_sql(f'SET search_path TO "{schema}"')
        conn.execute(sqlalchemy.text(
            "INSERT INTO durable_runs (id, workflow, status, input, fingerprint, wake_seq, created_at, updated_at) "
            "VALUES ('old-run', 'old.parent', 'pending', :input, 'f', 0, :now, :now)"),
            {"input": json.dumps({"args": [20], "kwargs": {}}), "now": time.time()})
    engine.dispose()
    app = Celery("upgraded-children-pg", broker="memory://", set_as_current=False)
    durable = Durable(app, store=POSTGRES_URL, schema=schema, auto_migrate=True)
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
        assert kid.info().parent_position == 0 and kid.result(timeout=1) == 21
    finally:
        durable.close()
        cleanup = sqlalchemy.create_engine(POSTGRES_URL)
        with cleanup.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        cleanup.dispose()
