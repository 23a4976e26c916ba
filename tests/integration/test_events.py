"""Human approval, event waits and sleep_until on a real worker, Redis broker, SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid

import pytest

from durable_tasks import EventDelivery, EventTokenError
from durable_tasks import tokens as token_module
from tests.support.stack import EVENT_SECRET, Stack

pytestmark = pytest.mark.integration


def order() -> str:
    return uuid.uuid4().hex[:8]


def wait_for_status(stack: Stack, run_id: str, status: str) -> None:
    stack.wait_until(lambda: stack.durable.run(run_id).status == status, 20, f"run {run_id} to be {status}")


def test_a_run_waits_for_approval_and_a_token_signed_event_continues_it(stack: Stack) -> None:
    key = order()
    handle = stack.client.workflows["approval"].start(key, 600)
    wait_for_status(stack, handle.id, "waiting")
    token = stack.durable.event_token(handle.id, "approved", ttl="1 hour")  # what the e-mail link carries
    receipt = stack.durable.send_event(token=token, payload={"by": "ana"})
    assert receipt.outcome == EventDelivery.DELIVERED
    result = handle.result(timeout=20)
    assert result["outcome"] == "shipped" and result["by"] == {"by": "ana"}
    assert stack.execution_counts(handle.id) == {"t.mark": 1, "t.mark#2": 1}
    with pytest.raises(EventTokenError, match="used already"):
        stack.durable.send_event(token=token, payload={"by": "ana again"})


def test_nobody_answers_and_the_run_takes_the_timeout_branch_never_early(stack: Stack) -> None:
    handle = stack.client.workflows["approval"].start(order(), 1.0)
    wait_for_status(stack, handle.id, "waiting")
    waited_from = stack.step(handle.id, "approved").created_at
    result = handle.result(timeout=20)
    assert result["outcome"] == "cancelled"
    assert result["decided_at"] >= waited_from + 1.0, "the timeout never fires early"
    step = stack.step(handle.id, "approved")
    assert step.status == "failed" and step.error["type"] == "durable_tasks.errors.EventTimeoutError"


def test_an_event_sent_before_the_run_waits_is_delivered_when_it_does(stack: Stack) -> None:
    key = order()
    kept = stack.durable.send_event(key=f"order-{key}", name="approved", payload="approved in advance")
    assert kept.outcome == EventDelivery.KEPT
    handle = stack.client.workflows["approval"].start(key, 600)
    assert handle.result(timeout=20)["by"] == "approved in advance"


def test_tampered_and_expired_tokens_are_refused_and_the_run_keeps_waiting(stack: Stack) -> None:
    handle = stack.client.workflows["approval"].start(order(), 600)
    wait_for_status(stack, handle.id, "waiting")
    token = stack.durable.event_token(handle.id, "approved")
    claims, signature = token.rsplit(".", 1)
    tampered = f"{claims}.{signature[::-1]}"
    expired = token_module.sign(EVENT_SECRET, handle.id, "approved", expires_at=time.time() - 1)
    for bad, reason in ((tampered, "tampered"), (expired, "expired")):
        with pytest.raises(EventTokenError) as refused:
            stack.durable.send_event(token=bad, payload="yes")
        assert refused.value.reason == reason
    time.sleep(0.5)
    assert handle.status == "waiting" and stack.step(handle.id, "approved").status == "waiting"
    stack.durable.cancel(handle.id)


def test_sleep_until_wakes_at_its_moment_and_never_before(stack: Stack) -> None:
    alarm = time.time() + 1.0
    handle = stack.client.workflows["sleep_until"].start(alarm)
    wait_for_status(stack, handle.id, "sleeping")
    woke = handle.result(timeout=20)
    assert alarm <= woke < alarm + 5
