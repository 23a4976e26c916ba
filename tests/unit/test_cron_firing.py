"""Firing schedules on SQLite with fixed clocks: one run per tick, catch-up, overlap, pause, trigger, backfill.

The calendar is asked about a chosen ``now``; runs are finished by advancing them in this process, and task
steps are delivered by hand (no worker, no broker), as in ``test_engine_without_broker``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from durable_tasks import Durable, InvalidStateError, ScheduleNotFoundError, current_step
from durable_tasks.coordinator import advance
from durable_tasks.schedule_sync import sync_schedules
from durable_tasks.scheduler import fire_due, tick_key
from durable_tasks.store import queries, schedule_queries
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages

MINUTE = 60.0
T0 = 28_000_000 * MINUTE  # 2023-03-28T10:40:00Z, a whole minute: every="1m" ticks on it


@pytest.fixture
def job(durable: Durable, broker: KeptMessages) -> Callable[..., Any]:
    """Declare a workflow schedule ``name`` (every minute unless told) whose run records its tick."""

    def declare(name: str, **options: Any) -> Any:
        options.setdefault("every", "1m")

        @durable.cron(name=name, **options)
        @durable.workflow(name=f"unit.cron.{name}")
        def scheduled(ctx: Any, *args: Any) -> dict[str, Any]:
            assert ctx.tick is not None
            return {"schedule": ctx.tick.schedule, "scheduled_for": ctx.tick.scheduled_for.timestamp(),
                    "started_at": ctx.tick.started_at.timestamp(), "args": list(args)}

        sync(durable, T0)
        return scheduled

    return declare


def sync(durable: Durable, now: float) -> Any:
    return sync_schedules(durable.store, durable.schedule_book, app=durable.app.main, now=now)


def runs_of(durable: Durable, name: str) -> list[Any]:
    with durable.store.read() as conn:
        rows = [row for row in queries.list_runs(conn, limit=10_000) if row.schedule == name]
    return sorted(rows, key=lambda row: (row.scheduled_for, row.created_at))


def ticks_of(durable: Durable, name: str) -> list[float]:
    return [row.scheduled_for for row in runs_of(durable, name)]


def row_of(durable: Durable, name: str) -> Any:
    with durable.store.read() as conn:
        return schedule_queries.get_schedule(conn, name)


def finish(durable: Durable, name: str) -> None:
    """Advance every active run of the schedule to its end (inline workflows finish in one advance)."""
    for row in runs_of(durable, name):
        if row.status == "pending":
            advance(durable.runtime, row.id)


def test_each_tick_starts_one_run_keyed_by_the_tick_and_a_second_pass_starts_nothing(
        durable: Durable, job: Callable[..., Any]) -> None:
    job("minutely", args=["eu"], overlap="allow_all")
    assert fire_due(durable.runtime, now=T0 + 1) == 1, "a new schedule starts its current tick"
    assert fire_due(durable.runtime, now=T0 + 2) == 0
    assert fire_due(durable.runtime, now=T0 + MINUTE + 0.5) == 1
    assert fire_due(durable.runtime, now=T0 + MINUTE + 0.5) == 0
    runs = runs_of(durable, "minutely")
    assert [row.scheduled_for for row in runs] == [T0, T0 + MINUTE]
    assert [row.idempotency_key for row in runs] == [tick_key("minutely", T0), tick_key("minutely", T0 + MINUTE)]
    assert runs[0].idempotency_key == "cron:minutely:2023-03-28T10:40:00+00:00"
    finish(durable, "minutely")
    result = durable.run(runs[1].id).result(timeout=1)
    assert result["schedule"] == "minutely" and result["scheduled_for"] == T0 + MINUTE
    assert result["args"] == ["eu"], "the declared arguments are the run's input; the tick comes from ctx.tick"
    assert result["started_at"] == pytest.approx(runs[1].created_at)
    assert json.loads(runs[1].input) == {"args": ["eu"], "kwargs": {}}, "the input is the same for every tick"


def test_a_tick_whose_run_exists_is_not_started_again(durable: Durable, job: Callable[..., Any]) -> None:
    job("fenced")
    fire_due(durable.runtime, now=T0 + 1)
    # What a second scheduler finds if it fires a tick that already has its run: nothing to do, no error.
    with durable.store.begin() as conn:
        schedule_queries.update_schedule(conn, "fenced", last_fired=None, next_fire_at=T0)
    assert fire_due(durable.runtime, now=T0 + 2) == 0
    assert ticks_of(durable, "fenced") == [T0]
    assert row_of(durable, "fenced").next_fire_at == T0 + MINUTE


def downtime(durable: Durable, name: str, back_at: float) -> list[float]:
    """Fire the first tick, then nothing until ``back_at``; the ticks started when the scheduler is back."""
    fire_due(durable.runtime, now=T0 + 1)
    finish(durable, name)
    fire_due(durable.runtime, now=back_at)
    return [tick for tick in ticks_of(durable, name) if tick > T0]


@pytest.mark.parametrize(("catch_up", "window", "expected"), [
    ("all", "1d", [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE, T0 + 4 * MINUTE]),
    ("all", "150s", [T0 + 3 * MINUTE, T0 + 4 * MINUTE]),
    ("latest", "1d", [T0 + 4 * MINUTE]),
    ("latest", "30s", []),
    ("none", "1d", []),
], ids=["all", "all-in-window", "latest", "latest-out-of-window", "none"])
def test_catch_up_after_downtime(durable: Durable, job: Callable[..., Any], catch_up: str, window: str,
                                 expected: list[float]) -> None:
    job("down", catch_up=catch_up, catch_up_window=window, overlap="allow_all")
    assert downtime(durable, "down", back_at=T0 + 4 * MINUTE + 40) == expected
    row = row_of(durable, "down")
    assert row.missed == 4 - len(expected) and row.next_fire_at == T0 + 5 * MINUTE


def test_catch_up_none_still_starts_a_tick_that_is_only_a_little_late(durable: Durable,
                                                                      job: Callable[..., Any]) -> None:
    job("punctual", catch_up="none")
    assert downtime(durable, "punctual", back_at=T0 + 4 * MINUTE + 10) == [T0 + 4 * MINUTE], \
        "due 10 s ago: late, not missed (a quarter of the interval is the grace)"


def test_overlap_skip_drops_ticks_while_a_run_is_active(durable: Durable, job: Callable[..., Any]) -> None:
    job("skip", overlap="skip")
    for minute in range(4):
        fire_due(durable.runtime, now=T0 + minute * MINUTE + 1)
    assert ticks_of(durable, "skip") == [T0], "the first run never finished"
    finish(durable, "skip")
    fire_due(durable.runtime, now=T0 + 4 * MINUTE + 1)
    assert ticks_of(durable, "skip") == [T0, T0 + 4 * MINUTE]
    assert row_of(durable, "skip").skipped == 3


def test_overlap_skip_with_catch_up_all_starts_the_oldest_missed_tick(durable: Durable,
                                                                     job: Callable[..., Any]) -> None:
    job("skip-all", overlap="skip", catch_up="all")
    assert downtime(durable, "skip-all", back_at=T0 + 3 * MINUTE + 1) == [T0 + MINUTE]
    assert row_of(durable, "skip-all").skipped == 2


def test_overlap_buffer_one_starts_one_waiting_tick_when_the_run_finishes(durable: Durable,
                                                                         job: Callable[..., Any]) -> None:
    job("buffer-one", overlap="buffer_one")
    for minute in range(4):
        fire_due(durable.runtime, now=T0 + minute * MINUTE + 1)
    row = row_of(durable, "buffer-one")
    assert json.loads(row.buffered) == [T0 + MINUTE] and row.skipped == 2
    assert row.next_fire_at == T0 + 3 * MINUTE + 2, "it looks again soon, to see the run finish"
    fire_due(durable.runtime, now=T0 + 3 * MINUTE + 2)
    assert ticks_of(durable, "buffer-one") == [T0], "still running: the buffered tick waits"
    finish(durable, "buffer-one")
    fire_due(durable.runtime, now=T0 + 3 * MINUTE + 3)
    runs = runs_of(durable, "buffer-one")
    assert [row.scheduled_for for row in runs] == [T0, T0 + MINUTE], "the buffered tick keeps its nominal time"
    assert row_of(durable, "buffer-one").buffered is None


def test_overlap_buffer_all_is_bounded_by_buffer_limit(durable: Durable, job: Callable[..., Any]) -> None:
    job("buffer-all", overlap="buffer_all", buffer_limit=2)
    for minute in range(5):
        fire_due(durable.runtime, now=T0 + minute * MINUTE + 1)
    row = row_of(durable, "buffer-all")
    assert json.loads(row.buffered) == [T0 + MINUTE, T0 + 2 * MINUTE] and row.skipped == 2
    for step in range(2):
        finish(durable, "buffer-all")
        fire_due(durable.runtime, now=T0 + 5 * MINUTE + step)
    assert ticks_of(durable, "buffer-all") == [T0, T0 + MINUTE, T0 + 2 * MINUTE], "one at a time, oldest first"


def test_overlap_cancel_other_cancels_the_active_run(durable: Durable, job: Callable[..., Any]) -> None:
    job("cancel", overlap="cancel_other")
    fire_due(durable.runtime, now=T0 + 1)
    fire_due(durable.runtime, now=T0 + MINUTE + 1)
    first, second = runs_of(durable, "cancel")
    assert first.status == "cancelled" and "overlap='cancel_other'" in json.loads(first.error)["message"]
    assert second.status == "pending" and second.scheduled_for == T0 + MINUTE


def test_overlap_allow_all_starts_every_tick(durable: Durable, job: Callable[..., Any]) -> None:
    job("allow", overlap="allow_all")
    for minute in range(3):
        fire_due(durable.runtime, now=T0 + minute * MINUTE + 1)
    assert [row.status for row in runs_of(durable, "allow")] == ["pending"] * 3


def test_a_paused_schedule_starts_nothing_and_resumes_at_its_current_tick(
        durable: Durable, job: Callable[..., Any]) -> None:
    job("paused", catch_up="all")
    fire_due(durable.runtime, now=T0 + 1)
    finish(durable, "paused")
    durable.pause_schedule("paused")
    for minute in range(1, 4):
        fire_due(durable.runtime, now=T0 + minute * MINUTE + 1)
    assert ticks_of(durable, "paused") == [T0]
    assert durable.schedules()[0].state == "paused" and row_of(durable, "paused").skipped == 3
    durable.resume_schedule("paused")
    fire_due(durable.runtime, now=T0 + 4 * MINUTE + 1)
    assert ticks_of(durable, "paused") == [T0, T0 + 4 * MINUTE], "the ticks passed while paused are not caught up"


def test_a_paused_declaration_starts_nothing(durable: Durable, job: Callable[..., Any]) -> None:
    job("declared-paused", paused=True)
    fire_due(durable.runtime, now=T0 + 1)
    assert ticks_of(durable, "declared-paused") == []


def test_trigger_starts_an_extra_run_with_its_own_key(durable: Durable, job: Callable[..., Any]) -> None:
    job("triggered")
    fire_due(durable.runtime, now=T0 + 1)
    handle = durable.trigger_schedule("triggered")
    runs = runs_of(durable, "triggered")
    assert len(runs) == 2 and handle.id in {row.id for row in runs}
    extra = next(row for row in runs if row.id == handle.id)
    assert extra.idempotency_key.startswith("cron:triggered:trigger:")
    assert durable.schedules()[0].last_run_id == handle.id


def test_backfill_starts_only_ticks_without_a_run(durable: Durable, job: Callable[..., Any]) -> None:
    job("late", catch_up="none")
    fire_due(durable.runtime, now=T0 + 1)
    handles = durable.backfill_schedule("late", T0 - 3 * MINUTE, T0)
    assert ticks_of(durable, "late") == [T0 - 3 * MINUTE, T0 - 2 * MINUTE, T0 - MINUTE, T0]
    assert len(handles) == 3, "the tick that already ran is left alone"
    assert durable.backfill_schedule("late", T0 - 3 * MINUTE, T0) == [], "running it again starts nothing"
    with pytest.raises(InvalidStateError, match="more than 1000 ticks; split it"):
        durable.backfill_schedule("late", T0 - 2000 * MINUTE, T0)
    with pytest.raises(InvalidStateError, match="swap the two"):
        durable.backfill_schedule("late", T0, T0 - MINUTE)


def test_unknown_schedules_are_named_errors(durable: Durable, job: Callable[..., Any]) -> None:
    job("known")
    with pytest.raises(ScheduleNotFoundError, match=r"No schedule named 'unknown'.*\(schedules: known\)"):
        durable.pause_schedule("unknown")


def test_a_schedule_ends_after_end_at(durable: Durable, job: Callable[..., Any]) -> None:
    job("ending", end_at=T0 + MINUTE, overlap="allow_all")
    fire_due(durable.runtime, now=T0 + 1)
    fire_due(durable.runtime, now=T0 + MINUTE + 1)
    assert ticks_of(durable, "ending") == [T0, T0 + MINUTE]
    assert row_of(durable, "ending").next_fire_at is None and durable.schedules()[0].state == "ended"


def test_a_task_schedule_runs_the_task_as_a_step_that_sees_its_tick(
        app: Any, durable: Durable, broker: KeptMessages) -> None:
    seen: list[Any] = []

    @app.task(name="u.report", shared=False)
    def report(team: str) -> str:
        seen.append(current_step())
        return f"report for {team}"

    durable.cron(every="1m", name="report", args=["sales"], options={"queue": "reports"})(report)
    sync(durable, T0)
    fire_due(durable.runtime, now=T0 + 1)
    (run,) = runs_of(durable, "report")
    assert run.workflow == "durable_tasks.task"
    advance(durable.runtime, run.id)
    (message,) = broker.steps()
    assert (message.task, message.args, message.options) == ("u.report", ["sales"], {"queue": "reports"})
    assert execute(durable.runtime, report, message, report.run) == "report for sales"
    assert durable.run(run.id).result(timeout=1) == "report for sales"
    (step,) = seen
    assert step.tick.schedule == "report" and step.tick.scheduled_for.timestamp() == T0
    assert step.tick.started_at.timestamp() == pytest.approx(run.created_at)


def test_a_schedule_that_cannot_fire_waits_and_does_not_stop_the_others(
        durable: Durable, job: Callable[..., Any]) -> None:
    job("broken")
    job("healthy")
    with durable.store.begin() as conn:  # a zone this machine does not know (say, tzdata is missing)
        schedule_queries.update_schedule(conn, "broken", cron="0 * * * *", every=None, tz="Mars/Olympus_Mons")
    assert fire_due(durable.runtime, now=T0 + 1) == 1
    assert ticks_of(durable, "healthy") == [T0]
    broken = row_of(durable, "broken")
    assert (broken.last_fired, broken.next_fire_at) == (None, T0 + 1 + 5), "looked at again in 5 s, cursor kept"
