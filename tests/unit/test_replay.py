"""Step keys, replay from the journal, suspension and change detection (the workflow context alone)."""

from __future__ import annotations

from typing import Any

import pytest

from durable_tasks import NonDeterminismError, StepFailedError
from durable_tasks.errors import Suspend
from durable_tasks.records import WrittenStep as StepRow
from durable_tasks.workflow import WorkflowContext


class RecordingWriter:
    """Journals new steps as pending (task, sleep) or done (inline, marker), like a first replay does."""

    max_sleep = 366 * 86400.0

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []

    def now(self) -> float:
        return 1_000_000.0

    def dispatch_task(self, position: int, step_key: str, name: str, request: dict[str, Any]) -> Any:
        self.started.append(("task", step_key))
        return StepRow("r", position, step_key, "task", name, "dispatched")

    def run_inline(self, position: int, step_key: str, fn: Any, args: Any, kwargs: Any, row: Any) -> Any:
        self.started.append(("inline", step_key))
        import json

        return StepRow("r", position, step_key, "inline", step_key, "succeeded", result=json.dumps(fn(*args)))

    def start_sleep(self, position: int, step_key: str, until: float) -> Any:
        self.started.append(("sleep", step_key))
        return StepRow("r", position, step_key, "sleep", step_key, "sleeping")

    def start_wait(self, position: int, step_key: str, wait: Any, row: Any) -> Any:
        self.started.append(("event", step_key))
        return StepRow("r", position, step_key, "event", wait.name, "waiting")

    def record_marker(self, position: int, step_key: str) -> Any:
        self.started.append(("marker", step_key))
        return StepRow("r", position, step_key, "marker", step_key, "succeeded", result="true")


def done(position: int, key: str, result: str, kind: str = "task") -> StepRow:
    return StepRow("r", position, key, kind, key, "succeeded", result=result)


def test_step_keys_count_repeated_names() -> None:
    writer = RecordingWriter()
    ctx = WorkflowContext("r", "wf", {}, writer)
    ctx.run_async("t.a")
    ctx.run_async("t.a")
    ctx.run_async("t.b")
    ctx.step("x", lambda: 1)
    ctx.step("x", lambda: 2)
    assert writer.started == [("task", "t.a"), ("task", "t.a#2"), ("task", "t.b"), ("inline", "x"),
                              ("inline", "x#2")]


def test_replay_returns_journaled_results_without_starting_anything() -> None:
    writer = RecordingWriter()
    journal = {0: done(0, "t.a", "3"), 1: done(1, "sum", "[1]", "inline")}
    ctx = WorkflowContext("r", "wf", journal, writer)
    assert ctx.run("t.a") == 3
    assert ctx.step("sum", lambda: pytest.fail("a journaled inline step ran again")) == [1]
    assert writer.started == []


def test_the_first_unjournaled_task_step_suspends_the_run() -> None:
    writer = RecordingWriter()
    ctx = WorkflowContext("r", "wf", {0: done(0, "t.a", "1")}, writer)
    ctx.run("t.a")
    with pytest.raises(Suspend) as suspended:
        ctx.run("t.b")
    assert suspended.value.args == ("task",)
    assert writer.started == [("task", "t.b")]


def test_gather_suspends_until_every_future_is_done_then_keeps_order() -> None:
    journal = {0: done(0, "t.a", '"a"'), 1: StepRow("r", 1, "t.b", "task", "t.b", "running")}
    ctx = WorkflowContext("r", "wf", journal, RecordingWriter())
    with pytest.raises(Suspend):
        ctx.gather(ctx.run_async("t.a"), ctx.run_async("t.b"))
    journal[1] = done(1, "t.b", '"b"')
    ctx = WorkflowContext("r", "wf", journal, RecordingWriter())
    assert ctx.gather(ctx.run_async("t.a"), ctx.run_async("t.b")) == ["a", "b"]


def test_a_failed_step_raises_step_failed_error_inside_the_workflow() -> None:
    error = '{"type": "builtins.ValueError", "message": "bad card"}'
    journal = {0: StepRow("r", 0, "t.a", "task", "t.a", "failed", error=error)}
    ctx = WorkflowContext("r", "wf", journal, RecordingWriter())
    with pytest.raises(StepFailedError, match="bad card") as failed:
        ctx.run("t.a")
    assert failed.value.step_key == "t.a" and failed.value.error_type == "builtins.ValueError"


def test_changed_code_is_detected_with_a_message_naming_run_step_journal_and_code() -> None:
    ctx = WorkflowContext("run-7", "checkout", {0: done(0, "t.charge", "1")}, RecordingWriter())
    with pytest.raises(NonDeterminismError) as changed:
        ctx.run("t.reserve")
    message = str(changed.value)
    for part in ("run-7", "checkout", "task step 't.charge'", "task step 't.reserve'", "ctx.patched"):
        assert part in message


def test_changed_kind_is_detected() -> None:
    ctx = WorkflowContext("r", "wf", {0: done(0, "x", "1")}, RecordingWriter())
    with pytest.raises(NonDeterminismError, match="inline step 'x'"):
        ctx.step("x", lambda: 1)


def test_patched_is_true_for_new_runs_and_false_for_runs_past_the_change() -> None:
    writer = RecordingWriter()
    new = WorkflowContext("r", "wf", {0: done(0, "t.a", "1")}, writer)
    new.run("t.a")
    assert new.patched("fraud-check") is True
    assert writer.started == [("marker", "fraud-check")]

    old = WorkflowContext("r", "wf", {0: done(0, "t.a", "1"), 1: done(1, "t.b", "2")}, RecordingWriter())
    old.run("t.a")
    assert old.patched("fraud-check") is False
    assert old.run("t.b") == 2, "the old run replays its old path"

    replayed = WorkflowContext("r", "wf", {0: done(0, "t.a", "1"), 1: StepRow(
        "r", 1, "fraud-check", "marker", "fraud-check", "succeeded", result="true")}, RecordingWriter())
    replayed.run("t.a")
    assert replayed.patched("fraud-check") is True


def test_sleep_suspends_as_sleeping() -> None:
    ctx = WorkflowContext("r", "wf", {}, RecordingWriter())
    with pytest.raises(Suspend) as suspended:
        ctx.sleep("cool-off", "3 days")
    assert suspended.value.args == ("sleep",)


def test_signature_arguments_follow_celery_partial_rules(tasks: dict[str, Any]) -> None:
    from durable_tasks.workflow import task_request

    echo = tasks["echo"]
    assert task_request(echo.s(2, k=1), (1,), {"j": 2}) == ("u.echo", [1, 2], {"k": 1, "j": 2}, {})
    assert task_request(echo.si(2), (1,), {}) == ("u.echo", [2], {}, {})
    assert task_request(echo.s().set(queue="q"), (), {})[3] == {"queue": "q"}
    assert task_request("u.echo", (1,), {})[:2] == ("u.echo", [1])
    with pytest.raises(TypeError):
        task_request(42, (), {})
