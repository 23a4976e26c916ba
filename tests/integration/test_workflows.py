"""Workflows and durable chains on a real worker, Redis broker, and both stores."""

from __future__ import annotations

import time

import pytest
from celery import chain, chord, group

from durable_tasks import RunHandle
from durable_tasks.messages import StepMessage
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_workflow_with_task_inline_fanout_and_sleep(stack: Stack) -> None:
    handle = stack.client.workflows["basic"].start(5)
    assert handle.result(timeout=20) == {"a": 6, "b": {"summary": 6}, "c": [12, 106]}
    steps = handle.steps()
    assert [(s.step_key, s.kind, s.status) for s in steps] == [
        ("t.add", "task", "succeeded"), ("summarise", "inline", "succeeded"),
        ("t.double", "task", "succeeded"), ("t.add#2", "task", "succeeded"), ("nap", "sleep", "succeeded"),
    ]
    assert all(count == 1 for count in stack.execution_counts(handle.id).values())
    assert not stack.outbox(handle.id), "every outbox message was consumed"


def test_durable_chain_keeps_celery_chain_semantics(stack: Stack) -> None:
    t = stack.client.tasks
    durable = stack.durable
    # partial args, previous result first, .si() ignores it, a chord passes the list on, nested chain
    handle = durable.chain(
        t["add"].s(2), t["double"].s(), t["add"].si(10, 10),
        chord([t["add"].s(1), t["double"].s()], t["echo"].s("tail")),
        chain(t["echo"].s(), t["echo"].si("immutable", k=1)),
        durable.sleep(0.2),
        t["echo"].s(),
    ).start(1)
    result = handle.result(timeout=20)
    # add(1,2)=3 -> double=6 -> add(10,10)=20 -> [add(20,1), double(20)] -> echo([21,40],"tail") -> ...
    assert result["args"][0] == {"args": ["immutable"], "kwargs": {"k": 1}, "queue": "celery"}
    first_echo = stack.step(handle.id, "t.echo").result
    assert first_echo["args"] == [[21, 40], "tail"]
    assert [s.step_key for s in handle.steps()] == [
        "t.add", "t.double", "t.add#2", "t.add#3", "t.double#2", "t.echo", "t.echo#2", "t.echo#3", "sleep",
        "t.echo#4",
    ]


def test_chain_matches_plain_celery_arguments(stack: Stack) -> None:
    t = stack.client.tasks
    handle = stack.durable.chain(t["echo"].s(1, k="v"), t["echo"].s(2)).apply_async(args=[0])
    assert handle.get(timeout=20)["args"] == [{"args": [0, 1], "kwargs": {"k": "v"}, "queue": "celery"}, 2]


def test_signature_options_such_as_queue_are_kept(stack: Stack) -> None:
    t = stack.client.tasks
    handle = stack.durable.chain(t["echo"].s("routed").set(queue="other")).start()
    assert handle.result(timeout=20)["queue"] == "other"


def test_group_inside_workflow_gathers_in_order(stack: Stack) -> None:
    t = stack.client.tasks
    handle = stack.durable.chain(group(t["add"].si(1, 1), t["slow"].si(7, 0.3), t["double"].si(5))).start()
    assert handle.result(timeout=20) == [2, 7, 10]


def test_duplicate_delivery_of_a_finished_step_does_not_run_the_body(stack: Stack) -> None:
    t = stack.client.tasks
    handle = stack.durable.chain(t["add"].s(1, 2), t["double"].s()).start()
    assert handle.result(timeout=20) == 6
    step = stack.step(handle.id, "t.add")
    redelivered = StepMessage(handle.id, step.position, step.step_key, step.attempt, "t.add", step.celery_task_id,
                              args=[1, 2])
    stack.durable.runtime.publisher.publish(redelivered)
    stack.durable.runtime.publisher.publish(redelivered)
    time.sleep(1.5)
    assert stack.execution_counts(handle.id)["t.add"] == 1
    assert handle.status == "succeeded"


def test_same_message_twice_while_running_executes_once(stack: Stack) -> None:
    t = stack.client.tasks
    handle = stack.durable.chain(t["slow"].s(1.0)).start("v")
    step = stack.wait_until(lambda: stack.step(handle.id, "t.slow"), 10, "the step row")
    message = StepMessage(handle.id, 0, "t.slow", 1, "t.slow", step.celery_task_id, args=["v", 1.0])
    stack.durable.runtime.publisher.publish(message)  # a second copy of the same message, as a broker may redeliver
    assert handle.result(timeout=20) == "v"
    time.sleep(0.5)
    assert stack.execution_counts(handle.id)["t.slow"] == 1


def test_idempotency_key_returns_the_same_run(stack: Stack) -> None:
    workflow = stack.client.workflows["basic"]
    key = f"order-{time.time_ns()}"
    first = workflow.start(1, idempotency_key=key)
    second = workflow.start(1, idempotency_key=key)
    assert first.id == second.id
    assert first.result(timeout=20)["a"] == 2


def test_step_sees_its_idempotency_key(stack: Stack) -> None:
    handle = stack.client.workflows["single"].start("t.keys")
    keys = handle.result(timeout=20)
    assert keys == {"idempotency_key": f"{handle.id}:t.keys", "attempt_key": f"{handle.id}:t.keys:1",
                    "attempt": 1}


def test_decorated_task_still_works_with_delay(stack: Stack) -> None:
    before = len(stack.executions_of(None))
    stack.client.tasks["add"].delay(20, 22)
    stack.wait_until(lambda: len(stack.executions_of(None)) > before, 10, "the plain execution")
    last = stack.executions_of(None)[-1]
    assert last["label"] == "add" and last["run"] is None


def test_handle_reports_status_and_is_asyncresult_like(stack: Stack) -> None:
    handle = stack.durable.chain(stack.client.tasks["slow"].s(0.5)).start(3)
    assert isinstance(handle, RunHandle)
    assert handle.status in ("running", "pending")
    assert handle.get(timeout=20) == 3
    assert handle.ready() and handle.status == "succeeded"
