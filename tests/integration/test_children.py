"""Child runs on a real worker, on SQLite and PostgreSQL: fan-out and fan-in, links, and a parent's cancel."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from durable_tasks.cli import main
from tests.support.stack import Stack

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


def test_cancelling_a_parent_cancels_its_running_children(stack: Stack) -> None:
    handle = stack.durable.start("wf.parcels", 2, 1.5)
    stack.wait_until(lambda: len(handle.children()) == 2, 20, "the children to start")
    stack.wait_until(lambda: any(stack.executions_of(child.id) for child in handle.children()), 20,
                     "a child's step to run")
    handle.cancel("order withdrawn")
    children = handle.children()
    stack.wait_until(lambda: all(child.status == "cancelled" for child in children), 20,
                     "the children to be cancelled")
    assert handle.status == "cancelled"
    assert all("order withdrawn" in (child.info().error or {}).get("message", "") for child in children)
