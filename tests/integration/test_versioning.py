"""Changed workflow code under a running run (I6) and ctx.patched()."""

from __future__ import annotations

import time

import pytest

from durable_tasks import WorkflowFailedError
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_changed_step_order_parks_the_run_with_a_clear_error_and_changes_nothing_else(stack: Stack) -> None:
    k = f"v-{time.time_ns()}"
    handle = stack.client.workflows["versioned"].start(k)
    stack.wait_until(lambda: (s := stack.step(handle.id, "t.slow")) and s.status == "running", 20,
                     "the slow step")
    stack.set_flag(f"v2-{k}")  # the new code is deployed while the run waits on its slow step
    with pytest.raises(WorkflowFailedError) as failed:
        handle.result(timeout=30)
    message = failed.value.error["message"]
    assert handle.id in message and "holds task step 't.slow'" in message
    assert "this replay asked for task step 't.add'" in message and "randomness" in message
    assert failed.value.error["type"].endswith("NonDeterminismError")
    assert [(s.step_key, s.status) for s in handle.steps()] == [("t.slow", "succeeded")], \
        "the finished step is kept and nothing new was started"


def test_patched_lets_new_code_run_beside_old_runs(stack: Stack) -> None:
    key = f"p-{time.time_ns()}"
    old = stack.client.workflows["patched"].start(key)
    stack.wait_until(lambda: (s := stack.step(old.id, "t.slow")) and s.status == "running", 20,
                     "the old run to wait on its last step")
    stack.set_flag(f"v2-{key}")  # deploy: a new step guarded by ctx.patched("add-double")
    assert old.result(timeout=30) == ["first", "2", "last"], "the old run replays its old path"
    new = stack.client.workflows["patched"].start(key)
    assert new.result(timeout=30) == ["first", "42", "2", "last"]
    assert [s.step_key for s in new.steps()] == ["t.mark", "add-double", "t.double", "t.add", "t.slow"]
