"""A run's own messages across kill -9 of the worker that sends them (PostgreSQL, real Redis, real workers).

``wf.messages`` sends a message of its own (``ctx.send_task``), then runs ``t.sender``, which sends one with
its result (``current_step().send_task``). ``t.receive`` records every delivery with its Celery task id.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.crash.helpers import assert_journal_never_re_executed
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def receipts(stack: Stack) -> list[dict[str, Any]]:
    return [row for row in stack.executions_of(None) if row["label"] == "receive"]


@pytest.mark.parametrize("dies_before", [":t.sender:1", ":t.receive"], ids=["step-message", "workflow-message"])
def test_killed_after_the_result_commit_and_before_the_send_the_relay_sends_it_once(private_stack: Stack,
                                                                                  dies_before: str) -> None:
    stack = private_stack
    first = stack.start_worker()
    # The worker dies when it is about to send that message: after the commit that recorded it.
    stack.flags.joinpath("die-before-send").write_text(dies_before)
    handle = stack.client.workflows["messages"].start("v")
    stack.wait_until(lambda: first.poll() is not None, 30, "the worker to die before sending")
    assert not stack.flags.joinpath("die-before-send").exists()
    assert [row["id"] for row in receipts(stack) if row["id"].endswith(dies_before)] == [], \
        "the message is committed but was never sent"
    assert [row.kind for row in stack.outbox(handle.id)] == ["task_message"]
    stack.start_worker()
    assert handle.result(timeout=60) == "v"
    stack.wait_until(lambda: len(receipts(stack)) == 2 and not stack.outbox(handle.id), 30,
                     "the relay to send the unconfirmed message and the step's message to arrive")
    assert sorted((row["id"], row["args"][0]) for row in receipts(stack)) == [
        (f"{handle.id}:t.receive", "from-workflow"), (f"{handle.id}:t.sender:1", "from-step")]
    assert_journal_never_re_executed(stack, [handle.id])


def test_killed_inside_the_body_before_the_commit_nothing_of_that_attempt_was_sent(private_stack: Stack) -> None:
    stack = private_stack
    first = stack.start_worker()
    stack.set_flag("die-in-body")  # attempt 1 of t.sender sends, then dies before its result commits
    handle = stack.client.workflows["messages"].start("w")
    stack.wait_until(lambda: first.poll() is not None, 30, "the worker to die inside the step's body")
    stack.start_worker()
    assert handle.result(timeout=60) == "w", "the sweeper re-dispatched the step to the new worker"
    stack.wait_until(lambda: len(receipts(stack)) >= 2 and not stack.outbox(handle.id), 30, "both messages")
    from_step = [row for row in receipts(stack) if row["args"][0] == "from-step"]
    assert [(row["id"], row["args"][1]) for row in from_step] == [(f"{handle.id}:t.sender:1", 2)], \
        "only the attempt that committed sent its message"
    sender = next(step for step in handle.steps() if step.step_key == "t.sender")
    assert [attempt.status for attempt in sender.attempts] == ["lost", "succeeded"]
    assert stack.execution_counts(handle.id)["t.sender"] == 2
