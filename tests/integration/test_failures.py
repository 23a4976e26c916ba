"""Journaled failures, retries on durable timers, parked runs and the operator's tools (real worker)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from durable_tasks import PayloadTooLargeError, WorkflowFailedError
from durable_tasks.cli import main
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def key(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def test_step_failing_twice_then_succeeding_has_three_attempts_and_honours_backoff(stack: Stack) -> None:
    k = key("flaky")
    handle = stack.client.workflows["flaky_flow"].start(k, 2)
    assert handle.result(timeout=30) == {"first": 1, "second": "ok after 3"}
    step = stack.step(handle.id, "t.flaky")
    assert [a.status for a in step.attempts] == ["failed", "failed", "succeeded"]
    assert step.attempts[0].error_type == "builtins.ConnectionError"
    assert "outside service down" in (step.attempts[0].error_message or "")
    assert step.attempts[0].worker and step.attempts[0].duration is not None
    starts = [a.started_at for a in step.attempts]
    # RetryPolicy(initial=0.3, exponential, no jitter): waits of 0.3 s then 0.6 s
    assert starts[1] - starts[0] >= 0.3 and starts[2] - starts[1] >= 0.6
    assert stack.execution_counts(handle.id)["t.mark"] == 1, "the earlier step ran once"


def test_exhausted_policy_parks_the_run_and_resume_finishes_it_after_the_fix(stack: Stack) -> None:
    k = key("fix")
    stack.set_flag(f"broken-{k}")
    handle = stack.client.workflows["fixable"].start(k)
    with pytest.raises(WorkflowFailedError, match="bug in broken_until_fixed") as failed:
        handle.result(timeout=30)
    assert f"durable runs resume {handle.id}" in str(failed.value)
    info = handle.info()
    assert info.status == "failed" and info.error["step"] == "t.broken_until_fixed"
    assert [s.status for s in handle.steps()] == ["succeeded", "failed"], "nothing after the failed step ran"

    stack.set_flag(f"broken-{k}", on=False)  # deploy the fix
    stack.durable.resume(handle.id)
    assert handle.result(timeout=30) == ["one", f"fixed {k}", "three"]
    counts = stack.execution_counts(handle.id)
    assert counts["t.mark"] == 1 and counts["t.mark#2"] == 1
    attempts = [a.status for a in stack.step(handle.id, "t.broken_until_fixed").attempts]
    assert attempts == ["failed", "failed", "resumed", "succeeded"]


def test_resume_from_the_cli_goes_through_the_workers_relay(stack: Stack) -> None:
    k = key("cli")
    stack.set_flag(f"broken-{k}")
    handle = stack.client.workflows["fixable"].start(k)
    stack.wait_until(lambda: handle.status == "failed", 30, "the run to fail")
    stack.set_flag(f"broken-{k}", on=False)
    args = ["--store", stack.store] + (["--schema", stack.schema] if stack.schema else [])
    runner = CliRunner()
    listed = runner.invoke(main, [*args, "runs", "list", "--status", "failed"])
    assert handle.id in listed.output
    result = runner.invoke(main, [*args, "runs", "resume", handle.id])
    assert result.exit_code == 0, result.output
    assert handle.result(timeout=30)[1] == f"fixed {k}"


def test_retry_step_skips_the_backoff_wait(stack: Stack) -> None:
    k = key("skip")
    # three attempts of flaky with the first two failing; the second wait would be 0.6 s, retry now instead
    handle = stack.client.workflows["flaky_flow"].start(k, 2)
    stack.wait_until(lambda: (s := stack.step(handle.id, "t.flaky")) and s.status == "retrying", 20, "a retry wait")
    stack.durable.retry_step(handle.id, "t.flaky")
    assert handle.result(timeout=30)["second"] == "ok after 3"


def test_unserialisable_result_fails_that_step_with_the_type_and_keeps_the_journal(stack: Stack) -> None:
    t = stack.client.tasks
    handle = stack.durable.chain(t["add"].s(1, 1), t["bad_result"].si(), t["add"].si(2, 2)).start()
    with pytest.raises(WorkflowFailedError) as failed:
        handle.result(timeout=30)
    message = failed.value.error["message"]
    assert "t.bad_result" in message and handle.id in message and "builtins.object" in message
    steps = handle.steps()
    assert [(s.step_key, s.status) for s in steps] == [("t.add", "succeeded"), ("t.bad_result", "failed")]
    assert steps[0].result == 2
    assert len(steps[1].attempts) == 1, "a result that cannot be encoded is not retried"


def test_a_workflow_can_handle_a_failed_step(stack: Stack) -> None:
    assert stack.client.workflows["caught"].start().result(timeout=30) == "handled StepFailedError"


def test_oversized_payloads_are_refused_and_nothing_is_lost(stack: Stack) -> None:
    t = stack.client.tasks
    before = len(stack.durable.runs(limit=1000))
    with pytest.raises(PayloadTooLargeError, match="input of workflow"):
        stack.durable.chain(t["echo"].si("x" * (2 * 1024 * 1024))).start()
    assert len(stack.durable.runs(limit=1000)) == before, "a refused start writes nothing"
    handle = stack.client.workflows["oversized"].start()
    with pytest.raises(WorkflowFailedError, match=r"arguments of step 't\.echo'.*over the limit"):
        handle.result(timeout=30)
    assert stack.step(handle.id, "make").status == "succeeded", "the journal before it is kept"


def test_unknown_task_name_parks_the_run_with_a_clear_error(stack: Stack) -> None:
    handle = stack.client.workflows["unknown_task"].start()
    with pytest.raises(WorkflowFailedError, match=r"t\.no_such_task.*not registered") as failed:
        handle.result(timeout=30)
    assert handle.id in str(failed.value.error)


def test_celery_self_retry_becomes_a_durable_timer(stack: Stack) -> None:
    k = key("celery")
    handle = stack.client.workflows["single"].start("t.celery_retry", k)
    assert handle.result(timeout=30) == "done after 3"
    attempts = stack.step(handle.id, "t.celery_retry").attempts
    assert [a.status for a in attempts] == ["failed", "failed", "succeeded"]


def test_celery_autoretry_options_become_journaled_retries(stack: Stack) -> None:
    k = key("auto")
    handle = stack.client.workflows["single"].start("t.autoretry", k)
    assert handle.result(timeout=30) == "done after 3"
    attempts = stack.step(handle.id, "t.autoretry").attempts
    assert [a.status for a in attempts] == ["failed", "failed", "succeeded"]
    # outside durable runs the same task keeps Celery's own autoretry (new broker messages)
    plain = key("auto-plain")
    stack.client.tasks["autoretry"].delay(plain)
    stack.wait_until(lambda: sum(r["label"] == f"autoretry:{plain}" for r in stack.executions_of(None)) == 3,
                     30, "Celery's own retries")


def test_cancel_is_journaled_and_seen_by_the_running_step(stack: Stack) -> None:
    t = stack.client.tasks
    handle = stack.durable.chain(t["wait_cancel"].s(), t["add"].si(1, 1)).start(10)
    stack.wait_until(lambda: (s := stack.step(handle.id, "t.wait_cancel")) and s.status == "running", 20,
                     "the step to run")
    stack.durable.cancel(handle.id, "customer changed their mind")
    step = stack.wait_until(lambda: (s := stack.step(handle.id, "t.wait_cancel")) and s.status == "succeeded" and s,
                            20, "the step to notice")
    assert step.result == "noticed cancel"
    time.sleep(0.5)
    assert handle.status == "cancelled" and len(handle.steps()) == 1, "nothing ran after the cancellation"


def test_fork_reuses_the_journal_before_the_chosen_step(stack: Stack) -> None:
    t = stack.client.tasks
    handle = stack.durable.chain(t["mark"].s("a"), t["mark"].s("b"), t["mark"].s("c")).start("v")
    assert handle.result(timeout=30) == "v"
    fork = stack.durable.fork(handle.id, "t.mark#2")
    assert fork.result(timeout=30) == "v"
    counts = stack.execution_counts(fork.id)
    assert counts == {"t.mark#2": 1, "t.mark#3": 1}, "the first step came from the journal"
