"""kill -9 of the worker while a child run's step runs: each child runs once, and the parent finishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash.helpers import assert_journal_never_re_executed
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_parent_with_three_children_survives_a_kill_mid_step(tmp_path: Path) -> None:
    stack = Stack("postgresql", tmp_path)
    try:
        first = stack.start_worker()
        handle = stack.durable.start("wf.parcels", 3, 1.5)
        stack.wait_until(lambda: any(row["label"] == "parcel:1" for row in stack.executions_of()), 30,
                         "the second child's step to run")
        stack.kill(first)
        stack.start_worker()
        assert handle.result(timeout=60) == [0, 1, 2, "all shipped"]

        children = handle.children()
        assert len(children) == 3, "each child run was started once, by the parent's first advance"
        assert [step.attempt for step in handle.steps()[:3]] == [1, 1, 1] and handle.steps()[3].status == "succeeded"
        killed = children[1]
        assert all(child.status == "succeeded" for child in children)
        (step,) = killed.steps()
        assert [attempt.status for attempt in step.attempts][-2:] == ["lost", "succeeded"]
        counts = [stack.execution_counts(child.id)["t.slow"] for child in children]
        assert counts[0] == 1 and counts[2] == 1 and 1 <= counts[1] <= 2, counts
        assert stack.execution_counts(handle.id)["t.mark"] == 1
        assert_journal_never_re_executed(stack, [handle.id, *(child.id for child in children)])
    finally:
        stack.close()
