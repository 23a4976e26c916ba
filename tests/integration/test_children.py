"""Child runs on a real worker, on SQLite and PostgreSQL: fan-out and fan-in, links, and a parent's cancel."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy
from celery import Celery
from click.testing import CliRunner

from durable_tasks.cli import main
from durable_tasks.store import migrate
from durable_tasks.store.engine import make_engine
from tests.support.stack import POSTGRES_URL, Stack
from tests.support.upgrade import finish_run_with_a_child, insert_run_before_children

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
    with engine.begin() as conn:
        conn.exec_driver_sql(f'SET search_path TO "{schema}"')
        insert_run_before_children(conn)
    engine.dispose()
    try:
        finish_run_with_a_child(Celery("upgraded-children-pg", broker="memory://", set_as_current=False),
                                schema=schema, store=POSTGRES_URL, auto_migrate=True)
    finally:
        cleanup = sqlalchemy.create_engine(POSTGRES_URL)
        with cleanup.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        cleanup.dispose()
