"""The coordinator's journal cache: what an advance reads, and every transition that must make it read more.

A process keeps the journals of the runs it advanced (``runtime.journals``); the next advance reads only the
steps that were unfinished here and the steps after the last one known here, unless the run's ``wake_seq``
moved (an operator restarted a finished step), which makes it read everything. "Another process" is played
by swapping in a fresh cache: the cache is the only per-process state an advance keeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from durable_tasks import Durable, RetryPolicy, StepFailedError, coordinator, transitions
from durable_tasks.journal import Journal, JournalCache
from durable_tasks.messages import AdvanceMessage, StepMessage
from durable_tasks.records import WrittenStep
from durable_tasks.store import queries
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages


@pytest.fixture
def broker(durable: Durable) -> KeptMessages:
    kept = KeptMessages()
    durable.runtime.publisher = kept
    return kept


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(from_position, rows read) of every advance's first statement."""
    seen: list[tuple[int, int]] = []
    original = queries.lock_run_with_steps

    def spy(conn: Any, run_id: str, from_position: int) -> Any:
        run, rows = original(conn, run_id, from_position)
        seen.append((from_position, len(rows)))
        return run, rows

    monkeypatch.setattr(queries, "lock_run_with_steps", spy)
    return seen


def deliver(durable: Durable, message: StepMessage, body: Any = None) -> Any:
    task = durable.app.tasks[message.task]
    return execute(durable.runtime, task, message, body or (lambda *args, **kwargs: task.run(*args, **kwargs)))


def run_all(durable: Durable, broker: KeptMessages) -> None:
    """Play the broker and the worker until no message is left: steps to the wrapper, advances to the coordinator."""
    for _ in range(1000):
        messages = broker.take()
        if not messages:
            return
        for message in messages:
            if isinstance(message, StepMessage):
                deliver(durable, message)
            elif isinstance(message, AdvanceMessage):
                coordinator.advance(durable.runtime, message.run_id, consume=message.outbox_id)


@contextlib.contextmanager
def another_process(durable: Durable) -> Iterator[None]:
    """Run the block with the cache of another process (empty at first, kept across blocks)."""
    own = durable.runtime.journals
    durable.runtime.journals = getattr(durable, "_other_cache", None) or JournalCache()
    try:
        yield
    finally:
        durable._other_cache = durable.runtime.journals  # type: ignore[attr-defined]
        durable.runtime.journals = own


def test_an_advance_reads_only_the_steps_that_may_have_changed(
        durable: Durable, broker: KeptMessages, tasks: dict[str, Any], reads: list[tuple[int, int]]) -> None:
    add = tasks["add"]
    handle = durable.chain(add.s(0, 1), *(add.s(1) for _ in range(29))).start()
    run_all(durable, broker)
    assert handle.result(timeout=1) == 30
    assert reads[0] == (0, 0), "a run this process has not seen is read in full (here: nothing yet)"
    assert [rows for _, rows in reads[1:]] == [1] * 30, "each later advance reads one step: the one that finished"
    assert [start for start, _ in reads[1:]] == list(range(30))
    assert len(durable.runtime.journals) == 0, "a finished run is not kept"


def test_a_workflow_replays_the_same_journal_from_the_cache(
        durable: Durable, broker: KeptMessages, tasks: dict[str, Any], reads: list[tuple[int, int]]) -> None:
    @durable.workflow(name="unit.loop")
    def loop(ctx: Any, n: int) -> int:
        value = 0
        for _ in range(n):
            value = ctx.run(tasks["add"], value, 1)
        return value

    handle = loop.start(20)
    run_all(durable, broker)
    assert handle.result(timeout=1) == 20
    assert sum(rows for _, rows in reads) == 20, "rows read grow with the run's length, not its square"


def test_advances_in_two_processes_each_read_what_the_other_wrote(
        durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.mixed")
    def mixed(ctx: Any) -> list[Any]:
        values = [ctx.run(tasks["add"], 1, 1)]
        values.append(ctx.step("double", lambda v: v * 2, values[-1]))
        values.append(ctx.run(tasks["add"], values[-1], 1))
        values.append(ctx.run(tasks["add"], values[-1], 1))
        values.append(ctx.step("double", lambda v: v * 2, values[-1]))
        return values

    handle = mixed.start()
    for turn in range(10):  # messages alternate between this process and the other one
        messages = broker.take()
        if not messages:
            break
        with another_process(durable) if turn % 2 else contextlib.nullcontext():
            for message in messages:
                if isinstance(message, StepMessage):
                    deliver(durable, message)
                elif isinstance(message, AdvanceMessage):
                    coordinator.advance(durable.runtime, message.run_id, consume=message.outbox_id)
    assert handle.result(timeout=1) == [2, 4, 5, 6, 12]


def test_an_operator_retry_of_a_handled_failure_invalidates_every_cached_journal(
        app: Any, durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    broken = {"on": True}

    @durable.step(retry=RetryPolicy(max_attempts=1))
    @app.task(name="u.flaky", shared=False)
    def flaky() -> str:
        if broken["on"]:
            raise ConnectionError("down")
        return "up"

    @durable.workflow(name="unit.handled")
    def handled(ctx: Any) -> list[str]:
        try:
            first = ctx.run(flaky)
        except StepFailedError:
            first = "handled"
        return [first, ctx.run(tasks["echo"], "second")["args"][0]]

    handle = handled.start()
    coordinator.advance(durable.runtime, handle.id)
    with pytest.raises(ConnectionError):
        deliver(durable, broker.take()[-1])  # the failure is handled: the next step is dispatched
    second = broker.last_step()
    assert second.step_key == "u.echo"
    assert len(durable.runtime.journals) == 1, "this process keeps the journal, with step 0 as failed"

    broken["on"] = False
    durable.retry_step(handle.id, "u.flaky")  # a finished (failed) step is dispatched again
    run_all(durable, broker)  # the retried step succeeds; the advances replay it as succeeded
    deliver(durable, second)
    assert handle.result(timeout=1) == ["up", "second"], "a stale journal would still see step 0 failed"


def test_a_resumed_chain_reads_its_journal_again(
        app: Any, durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    broken = {"on": True}

    @durable.step(retry=RetryPolicy(max_attempts=1))
    @app.task(name="u.gate", shared=False)
    def gate(value: int) -> int:
        if broken["on"]:
            raise ConnectionError("down")
        return value * 10

    add = tasks["add"]
    handle = durable.chain(add.s(1, 1), gate.s(), add.s(5)).start()
    with contextlib.suppress(ConnectionError):
        run_all(durable, broker)
    assert handle.status == "failed"
    broken["on"] = False
    durable.resume(handle.id)
    run_all(durable, broker)
    assert handle.result(timeout=1) == 25


def test_timers_and_events_change_only_unfinished_steps_which_are_read_again(
        durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.sleep_and_wait")
    def flow(ctx: Any) -> Any:
        first = ctx.run(tasks["add"], 1, 2)
        ctx.sleep("pause", 0)
        ctx.sleep("nap", 0.05)
        approved = ctx.wait_for_event("approved")
        return [first, approved, ctx.run(tasks["add"], first, 10)]

    handle = flow.start()
    run_all(durable, broker)
    assert handle.status == "sleeping"
    import time

    time.sleep(0.06)
    durable.timers.fire_due()
    run_all(durable, broker)
    assert handle.status == "waiting"
    durable.send_event(handle.id, "approved", {"by": "ana"})
    run_all(durable, broker)
    assert handle.result(timeout=1) == [3, {"by": "ana"}, 13]


def test_a_rolled_back_advance_keeps_nothing(durable: Durable, broker: KeptMessages, tasks: dict[str, Any],
                                             reads: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    add = tasks["add"]
    handle = durable.chain(add.s(0, 1), add.s(1), add.s(1)).start()
    assert len(durable.runtime.journals) == 1
    first = broker.take()[-1]

    def broken_settle(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("database gone mid-advance")

    with monkeypatch.context() as patch:
        patch.setattr(transitions, "settle_run", broken_settle)
        with pytest.raises(RuntimeError):
            deliver(durable, first)
    assert len(durable.runtime.journals) == 0, "the journal was taken out and not put back"
    coordinator.advance(durable.runtime, handle.id)  # as the sweeper's advance would
    assert reads[-1] == (0, 1), "the next advance reads the journal in full: the step rolled back to running"
    assert [step.status for step in handle.steps()] == ["running"]


def test_a_cancelled_run_is_not_replayed(durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    add = tasks["add"]
    handle = durable.chain(add.s(0, 1), add.s(1)).start()
    first = broker.take()[-1]

    def cancelled_while_running(x: int, y: int) -> int:
        durable.cancel(handle.id)
        return x + y

    deliver(durable, first, cancelled_while_running)
    assert handle.status == "cancelled"
    assert [step.status for step in handle.steps()] == ["succeeded"], "no step after the cancel"
    assert len(durable.runtime.journals) == 0


def test_a_chain_with_groups_and_sleeps_resumes_at_the_right_element(
        durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    from celery import group

    add, echo = tasks["add"], tasks["echo"]
    handle = durable.chain(add.s(1, 1), group(add.s(10), add.s(20)), durable.sleep(0), echo.s("tail"),
                           add.si(3, 4), durable.sleep(0), echo.s()).start()
    run_all(durable, broker)
    assert handle.result(timeout=1) == {"args": [7], "kwargs": {}}
    steps = handle.steps()
    assert [step.step_key for step in steps] == ["u.add", "u.add#2", "u.add#3", "sleep", "u.echo", "u.add#4",
                                                 "sleep#2", "u.echo#2"]
    assert steps[4].result == {"args": [[12, 22], "tail"], "kwargs": {}}


def test_the_cache_is_bounded_by_steps_least_recently_advanced_first() -> None:
    cache = JournalCache(max_steps=5)
    for name, size in (("a", 2), ("b", 2), ("c", 2)):
        journal = Journal(0)
        for position in range(size):
            journal.record(WrittenStep(name, position, f"k{position}", "task", "t", "succeeded"))
        cache.keep(name, journal)
    assert cache.take("a") is None, "the least recent run went first"
    assert cache.take("b") is not None and cache.take("c") is not None
    too_big = Journal(0)
    for position in range(6):
        too_big.record(WrittenStep("d", position, f"k{position}", "task", "t", "succeeded"))
    cache.keep("d", too_big)
    assert len(cache) == 0


def test_changeable_from_is_the_lowest_unfinished_step_or_the_end() -> None:
    journal = Journal(0)
    assert journal.changeable_from() == 0
    journal.merge({0: WrittenStep("r", 0, "a", "task", "t", "succeeded"),
                   1: WrittenStep("r", 1, "b", "task", "t", "dispatched"),
                   2: WrittenStep("r", 2, "c", "sleep", "c", "sleeping")}, 0)
    assert journal.changeable_from() == 1
    journal.merge({1: WrittenStep("r", 1, "b", "task", "t", "succeeded")}, 1)  # position 2 is gone
    assert sorted(journal.rows) == [0, 1] and journal.changeable_from() == 2
