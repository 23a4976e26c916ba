"""Starting, inspecting and operating runs on a SQLite store, with no worker: the journal alone."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from click.testing import CliRunner

from durable_tasks import (
    Durable,
    InvalidStateError,
    PayloadTooLargeError,
    RunNotFoundError,
    SerializationError,
    UnknownWorkflowError,
)
from durable_tasks.cli import main
from durable_tasks.store import queries


@pytest.fixture
def flow(durable: Durable, tasks: dict[str, Any]) -> Any:
    @durable.workflow(name="unit.flow")
    def flow(ctx: Any, n: int) -> int:
        return ctx.run(tasks["add"], n, 1)

    return flow


def test_start_commits_the_run_with_its_advance_message(durable: Durable, flow: Any) -> None:
    handle = flow.start(1)
    assert handle.status == "pending"
    with durable.store.read() as conn:
        assert [row.kind for row in queries.pending_outbox(conn, handle.id)] == ["advance"]


def test_workflow_run_dispatches_the_first_task_in_the_same_commit(durable: Durable, flow: Any) -> None:
    handle = flow.run(1)
    assert handle.status == "running"
    assert [(s.step_key, s.status) for s in handle.steps()] == [("u.add", "dispatched")]
    with durable.store.read() as conn:
        assert queries.pending_outbox(conn, handle.id) == [], "the dispatched step row is the message's record"
        step = queries.get_step(conn, handle.id, 0)
    assert step.publish_after > time.time(), "the relay re-sends it if nobody claims it in time"


def test_bad_input_is_refused_before_anything_is_written(durable: Durable, flow: Any) -> None:
    with pytest.raises(UnknownWorkflowError, match="no_such_workflow"):
        durable.start("no_such_workflow")
    with pytest.raises(SerializationError, match=r"input of workflow 'unit\.flow'"):
        flow.start(object())
    with pytest.raises(PayloadTooLargeError):
        flow.start("x" * (2 * 1024 * 1024))
    assert durable.runs() == []


def test_inline_workflow_runs_in_this_process(durable: Durable) -> None:
    @durable.workflow(name="unit.inline")
    def inline(ctx: Any) -> list[int]:
        return [ctx.step("s", lambda i=i: i) for i in range(10)]

    handle = inline.run()
    assert handle.result(timeout=1) == list(range(10))
    assert len(handle.steps()) == 10 and all(len(s.attempts) == 1 for s in handle.steps())


def test_workflow_code_bugs_park_the_run_with_the_traceback(durable: Durable) -> None:
    @durable.workflow(name="unit.buggy")
    def buggy(ctx: Any) -> None:
        ctx.step("ok", lambda: 1)
        raise KeyError("missing")

    handle = buggy.run()
    info = handle.info()
    assert info.status == "failed" and info.error["type"] == "builtins.KeyError"
    assert "Traceback" in info.error["traceback"]
    assert handle.steps()[0].status == "succeeded", "the journal before the bug is kept"


def test_operations_check_the_run_state(durable: Durable, flow: Any) -> None:
    handle = flow.start(1)
    with pytest.raises(InvalidStateError, match="only failed runs can be resumed"):
        durable.resume(handle.id)
    with pytest.raises(RunNotFoundError):
        durable.resume("nope")
    durable.cancel(handle.id)
    assert handle.status == "cancelled"
    with pytest.raises(InvalidStateError, match="nothing to cancel"):
        durable.cancel(handle.id)


def test_prune_deletes_only_finished_runs(durable: Durable, flow: Any) -> None:
    finished = flow.start(1)
    durable.cancel(finished.id)
    active = flow.start(2)
    with durable.store.begin() as conn:
        queries.update_run(conn, finished.id, finished_at=time.time() - 100)
        queries.update_run(conn, active.id, created_at=time.time() - 100)
    assert durable.prune("1m") == 1
    assert [run.id for run in durable.runs()] == [active.id]
    with pytest.raises(InvalidStateError):
        durable.operations.prune(60, status="running")


def test_cli_lists_shows_and_operates(durable: Durable, flow: Any) -> None:
    store = durable.settings.store
    handle = flow.start(7)
    runner = CliRunner()
    listed = runner.invoke(main, ["--store", store, "runs", "list"])
    assert listed.exit_code == 0 and handle.id in listed.output
    shown = runner.invoke(main, ["--store", store, "runs", "show", handle.id])
    assert shown.exit_code == 0 and "unit.flow" in shown.output and "pending" in shown.output
    refused = runner.invoke(main, ["--store", store, "runs", "resume", handle.id])
    assert refused.exit_code == 1 and "only failed runs can be resumed" in refused.output
    missing = runner.invoke(main, ["--store", store, "runs", "show", "nope"])
    assert missing.exit_code == 1 and "No run with id 'nope'" in missing.output
    cancelled = runner.invoke(main, ["--store", store, "runs", "cancel", handle.id])
    assert cancelled.exit_code == 0 and handle.status == "cancelled"
    assert json.loads(json.dumps(durable.runs()[0].error))["type"] == "cancelled"
    workers = runner.invoke(main, ["--store", store, "workers"])
    assert workers.exit_code == 0


def test_cli_db_upgrade_and_check(tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    runner = CliRunner()
    before = runner.invoke(main, ["--store", store, "db", "check"])
    assert before.exit_code == 1 and "durable db upgrade" in before.output
    assert runner.invoke(main, ["--store", store, "db", "upgrade"]).exit_code == 0
    assert runner.invoke(main, ["--store", store, "db", "check"]).exit_code == 0


def _advance_pending(durable: Durable, run_id: str) -> None:
    """Do what a worker does with the run's advance message, in this process."""
    from durable_tasks import coordinator

    coordinator.advance(durable.runtime, run_id)


def test_resume_gives_a_fresh_retry_budget_and_keeps_handled_failures(durable: Durable) -> None:
    from durable_tasks import RetryPolicy, StepFailedError

    broken = {"on": True}

    def always_fails() -> None:
        raise ValueError("handled by the workflow")

    @durable.step(retry=RetryPolicy(max_attempts=2, initial=0, jitter=0))
    def fragile() -> str:
        if broken["on"]:
            raise ConnectionError("down")
        return "up"

    @durable.workflow(name="unit.resume")
    def flow(ctx: Any) -> str:
        with contextlib.suppress(StepFailedError):
            ctx.step("compensated", always_fails)
        return ctx.step("fragile", fragile)

    def settle(handle: Any) -> None:  # fire due retry timers and replay until the run stops moving
        for _ in range(10):
            durable.timers.fire_due()
            _advance_pending(durable, handle.id)

    handle = flow.run()
    settle(handle)
    assert handle.status == "failed"
    durable.resume(handle.id)
    settle(handle)
    fragile_step = next(s for s in handle.steps() if s.step_key == "fragile")
    assert [a.status for a in fragile_step.attempts] == ["failed", "failed", "resumed", "failed", "failed"]
    broken["on"] = False
    durable.resume(handle.id)
    settle(handle)
    assert handle.result(timeout=1) == "up"
    compensated = next(s for s in handle.steps() if s.step_key == "compensated")
    assert compensated.status == "failed" and len(compensated.attempts) == 1, "a handled failure is not restarted"


def test_resume_restarts_a_step_that_failed_before_its_message_left(
        app: Any, durable: Durable, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.late_task")
    def flow(ctx: Any) -> Any:
        return ctx.run("u.late", 1)

    handle = flow.run()
    assert handle.status == "failed" and "not registered" in handle.info().error["message"]

    @durable.step
    @app.task(name="u.late", shared=False)
    def late(x: int) -> int:  # the fix: the task is deployed
        return x

    durable.resume(handle.id)
    _advance_pending(durable, handle.id)
    assert [(s.step_key, s.status) for s in handle.steps()] == [("u.late", "dispatched")]
