"""Per-attempt timeouts: Celery time limits on task steps (prefork pool), a check after inline steps."""

from __future__ import annotations

from typing import Any

import pytest

from durable_tasks import RetryPolicy, WorkflowFailedError
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_task_step_attempts_are_cut_at_their_timeout_and_journaled(private_stack: Stack) -> None:
    private_stack.start_worker(pool="prefork", concurrency=1)
    handle = private_stack.client.workflows["single"].start("t.too_slow", 3)
    with pytest.raises(WorkflowFailedError, match="SoftTimeLimitExceeded"):
        handle.result(timeout=30)
    attempts = private_stack.step(handle.id, "t.too_slow").attempts
    assert [a.status for a in attempts] == ["failed", "failed"]
    assert all(a.duration is not None and a.duration < 2 for a in attempts), "cut at 0.5 s, not after 3 s"


def test_inline_step_over_its_timeout_counts_as_a_failed_attempt(private_stack: Stack) -> None:
    durable = private_stack.durable
    calls: list[float] = []

    @durable.step(retry=RetryPolicy(max_attempts=1, timeout=0.05))
    def slow_inline() -> str:
        import time

        calls.append(1)
        time.sleep(0.1)
        return "late"

    @durable.workflow(name="wf.inline_timeout")
    def flow(ctx: Any) -> str:
        return ctx.step("slow", slow_inline)

    handle = flow.run()
    assert handle.status == "failed"
    assert "over its timeout" in (handle.steps()[0].attempts[0].error_message or "")
