"""Child runs on SQLite with no worker: the test delivers each message the engine publishes, as a broker would.

A parent starts children (``ctx.start_child``/``ctx.run_child``) in its advance transaction; each child is a
run of its own whose end settles the parent's ``child`` step in the child's final transaction.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner

from durable_tasks import Durable, InvalidStateError, RetryPolicy, StepFailedError
from durable_tasks.children import child_run_id
from durable_tasks.cli import main
from durable_tasks.coordinator import advance
from durable_tasks.store import migrate, queries
from durable_tasks.store.engine import make_engine
from durable_tasks.testing import run_eagerly
from tests.support.engine import deliver, pump
from tests.support.publisher import KeptMessages
from tests.support.upgrade import finish_run_with_a_child, insert_run_before_children


@pytest.fixture
def broker(durable: Durable) -> KeptMessages:
    kept = KeptMessages()
    durable.runtime.publisher = kept
    return kept


@pytest.fixture
def family(app: Any, durable: Durable, tasks: dict[str, Any]) -> dict[str, Any]:
    broken: set[int] = set()

    @durable.step
    @app.task(name="u.ship", shared=False)
    def ship(parcel: int) -> dict[str, Any]:
        if parcel in broken:
            raise LookupError(f"no such parcel {parcel}")
        return {"parcel": parcel}

    @durable.workflow(name="unit.ship_parcel")
    def ship_parcel(ctx: Any, parcel: int) -> dict[str, Any]:
        return ctx.run(ship, parcel)

    @durable.workflow(name="unit.fulfil", retry=RetryPolicy(max_attempts=2, initial=0.01, jitter=0))
    def fulfil(ctx: Any, parcels: list[int]) -> list[Any]:
        total = ctx.run(tasks["add"], len(parcels), 0)
        shipped = ctx.gather(*(ctx.start_child(ship_parcel, parcel) for parcel in parcels))
        return [total, shipped]

    @durable.workflow(name="unit.one_child")
    def one_child(ctx: Any, parcel: int) -> Any:
        try:
            return ctx.run_child("unit.ship_parcel", parcel)
        except StepFailedError as exc:
            return {"failed": exc.error_type}

    return {"ship": ship, "ship_parcel": ship_parcel, "fulfil": fulfil, "one_child": one_child, "broken": broken}


def test_a_parent_starts_its_children_in_its_advance_and_finishes_with_their_results(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    handle = family["fulfil"].start([7, 8, 9])
    pump(durable, broker)
    assert handle.result(timeout=1) == [3, [{"parcel": 7}, {"parcel": 8}, {"parcel": 9}]]
    steps = handle.steps()
    assert [(s.step_key, s.kind, s.status) for s in steps] == [
        ("u.add", "task", "succeeded"), ("unit.ship_parcel", "child", "succeeded"),
        ("unit.ship_parcel#2", "child", "succeeded"), ("unit.ship_parcel#3", "child", "succeeded")]
    children = handle.children()
    assert [child.id for child in children] == [child_run_id(handle.id, s.step_key, 1) for s in steps[1:]]
    assert [child.info().parent_id for child in children] == [handle.id] * 3
    assert [child.info().parent_position for child in children] == [1, 2, 3]
    assert all(child.parent().id == handle.id for child in children)  # type: ignore[union-attr]


def test_a_replayed_parent_never_starts_a_child_twice(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    handle = family["one_child"].start(5)
    held = pump(durable, broker, hold=("u.ship",))  # the child waits on its task step
    for _ in range(3):  # duplicate advances of the parent (a relay resend, a sweep)
        advance(durable.runtime, handle.id)
    assert broker.messages == [] and len(handle.children()) == 1
    (step,) = handle.steps()
    assert (step.kind, step.status, step.child_run) == ("child", "running", handle.children()[0].id)
    broker.messages.extend(held)
    pump(durable, broker)
    assert handle.result(timeout=1) == {"parcel": 5}


def test_a_failed_child_fails_the_parent_step_and_its_retry_policy_starts_a_new_child(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    family["broken"].add(8)
    handle = family["fulfil"].start([7, 8])
    pump(durable, broker)
    step = next(s for s in handle.steps() if s.step_key == "unit.ship_parcel#2")
    assert step.status == "retrying" and step.error is not None
    assert step.error["type"] == "builtins.LookupError" and "no such parcel 8" in step.error["message"]
    first_child = child_run_id(handle.id, step.step_key, 1)
    assert durable.run(first_child).status == "failed"
    family["broken"].discard(8)  # the outside problem is fixed before the retry
    time.sleep(0.02)
    assert durable.timers.fire_due() == 1
    pump(durable, broker)
    assert handle.result(timeout=1) == [2, [{"parcel": 7}, {"parcel": 8}]]
    step = next(s for s in handle.steps() if s.step_key == "unit.ship_parcel#2")
    assert [a.status for a in step.attempts] == ["failed", "succeeded"]
    assert step.child_run == child_run_id(handle.id, step.step_key, 2) != first_child
    assert len(handle.children()) == 3, "one child per attempt"


def test_a_child_that_fails_for_good_raises_in_the_parent_with_the_child_error_type(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    family["broken"].add(4)
    handle = family["one_child"].start(4)
    pump(durable, broker)
    assert handle.result(timeout=1) == {"failed": "builtins.LookupError"}


def test_cancelling_the_parent_cancels_its_children_and_terminates_their_running_steps(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    handle = family["fulfil"].start([1, 2])
    held = pump(durable, broker, hold=("u.ship",))
    children = handle.children()
    with durable.store.begin() as conn:  # a worker took the first child's task step
        queries.claim_step(conn, children[0].id, 0, 1, "w:1:x", time.time())
    handle.cancel("customer left", terminate=True)
    assert handle.status == "cancelled"
    assert [s.status for s in handle.steps()[1:]] == ["cancelled", "cancelled"]
    pump(durable, broker)  # each child consumes the advance that carries the cancel
    assert [child.status for child in children] == ["cancelled", "cancelled"]
    running, dispatched = (child.steps()[0] for child in children)
    assert running.status == "cancelled" and running.error == {"type": "cancelled", "terminate": True, "message": (
        f"its parent run {handle.id} was cancelled: customer left")}
    assert dispatched.status == "cancelled"
    for message in held:  # the held deliveries arrive late: nothing runs
        assert isinstance(deliver(durable, message), Exception)
    assert handle.status == "cancelled"


def test_cancel_without_terminate_leaves_running_task_steps_to_notice(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    handle = family["one_child"].start(1)
    pump(durable, broker, hold=("u.ship",))
    (child,) = handle.children()
    with durable.store.begin() as conn:
        queries.claim_step(conn, child.id, 0, 1, "w:1:x", time.time())
    durable.cancel(handle.id)
    pump(durable, broker)
    assert child.status == "cancelled" and child.steps()[0].status == "running"


def test_an_operator_cancelling_a_child_fails_the_parent_step_without_retry(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    handle = family["fulfil"].start([3])
    pump(durable, broker, hold=("u.ship",))
    (child,) = handle.children()
    durable.cancel(child.id, "wrong address")
    pump(durable, broker)
    assert handle.status == "failed"
    step = handle.steps()[1]
    assert step.status == "failed" and step.error is not None and step.error["type"] == "cancelled"
    assert "wrong address" in step.error["message"] and len(handle.children()) == 1


def test_a_failed_child_is_started_again_through_its_parent_step(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    family["broken"].add(6)
    handle = family["fulfil"].start([6])
    pump(durable, broker)
    time.sleep(0.02)
    durable.timers.fire_due()
    pump(durable, broker)
    assert handle.status == "failed", "both attempts failed"
    failed_child = handle.children()[-1]
    with pytest.raises(InvalidStateError, match=f"durable runs retry-step {handle.id} unit.ship_parcel"):
        durable.resume(failed_child.id)
    family["broken"].clear()
    durable.retry_step(handle.id, "unit.ship_parcel")
    pump(durable, broker)
    assert handle.result(timeout=1) == [1, [{"parcel": 6}]]
    assert len(handle.children()) == 3


def test_an_unknown_child_workflow_fails_the_step_naming_it(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    @durable.workflow(name="unit.orphan")
    def orphan(ctx: Any) -> Any:
        return ctx.run_child("unit.no_such_workflow")

    handle = orphan.start()
    pump(durable, broker)
    assert handle.status == "failed"
    (step,) = handle.steps()
    assert step.kind == "child" and step.error is not None and "unit.no_such_workflow" in step.error["message"]
    assert handle.children() == []


def test_runs_show_links_parent_and_children_both_ways(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    handle = family["fulfil"].start([1, 2])
    pump(durable, broker)
    store = ["--store", durable.store.url]
    shown = json.loads(CliRunner().invoke(main, ["runs", "show", handle.id, "--json", *store]).output)
    assert shown["parent"] is None
    assert [(c["run_id"], c["step_key"], c["attempt"], c["status"]) for c in shown["children"]] == [
        (child_run_id(handle.id, "unit.ship_parcel", 1), "unit.ship_parcel", 1, "succeeded"),
        (child_run_id(handle.id, "unit.ship_parcel#2", 1), "unit.ship_parcel#2", 1, "succeeded")]
    child = shown["children"][1]["run_id"]
    up = json.loads(CliRunner().invoke(main, ["runs", "show", child, "--json", *store]).output)
    assert up["parent"] == {"run_id": handle.id, "workflow": "unit.fulfil", "status": "succeeded", "position": 2,
                            "step_key": "unit.ship_parcel#2", "attempt": 1}
    assert up["run"]["parent_id"] == handle.id
    text = CliRunner().invoke(main, ["runs", "show", child, *store], env={"COLUMNS": "200"}).output
    assert f"parent           │ {handle.id} (unit.fulfil, succeeded), its step #2 unit.ship_parcel#2, attempt 1" in text
    text = CliRunner().invoke(main, ["runs", "show", handle.id, *store], env={"COLUMNS": "200"}).output
    assert "2 child run(s)" in text and child in text


def test_children_run_eagerly_too(durable: Durable, family: dict[str, Any]) -> None:
    outcome = run_eagerly(family["fulfil"], [1, 2])
    assert outcome.result == [2, [{"parcel": 1}, {"parcel": 2}]]
    assert [(row.step_key, row.kind) for row in outcome.journal][1:] == [
        ("unit.ship_parcel", "child"), ("unit.ship_parcel#2", "child")]
    assert outcome.children["unit.ship_parcel#2"].result == {"parcel": 2}
    family["broken"].add(2)
    failed = run_eagerly(family["one_child"], 2)
    assert failed.result == {"failed": "builtins.LookupError"}


def test_a_run_started_before_revision_0006_finishes_after_it_with_a_child(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url)
    migrate.upgrade(engine, revision="0005_schedules")
    with engine.begin() as conn:
        insert_run_before_children(conn)
    engine.dispose()
    # SQLite upgrades itself on first use
    finish_run_with_a_child(Celery("upgraded-children", broker="memory://", set_as_current=False), store=url)


def test_a_child_whose_step_finishes_before_its_cancel_request_arrives_is_cancelled_at_its_advance(
        durable: Durable, broker: KeptMessages, family: dict[str, Any]) -> None:
    handle = family["one_child"].start(3)
    (step_message,) = pump(durable, broker, hold=("u.ship",))
    (child,) = handle.children()
    durable.cancel(handle.id, "too late")
    queued = broker.take()  # the request to the child waits behind the step in a busy worker's queue
    assert deliver(durable, step_message) == {"parcel": 3}, "the step was already running: it finishes"
    assert child.status == "cancelled" and child.steps()[0].status == "succeeded"
    assert child.info().error == {"type": "cancelled", "message": f"its parent run {handle.id} was cancelled: too late"}
    broker.messages.extend(queued)
    pump(durable, broker)
    assert child.status == "cancelled" and handle.status == "cancelled"
