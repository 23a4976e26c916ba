"""Durable schedules on real workers and PostgreSQL: one run per tick across workers, catch-up after the
workers were stopped across three ticks, and overlap with a job longer than its interval.

Each test has its own stack (schema, broker prefix, workers); the schedules are declared in the test app
(``tests/support/app.py``) from the stack's ``cron`` list, so the workers sync them when they start.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from durable_tasks.scheduler import spec_of
from durable_tasks.store import queries, schedule_queries
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def runs_by_schedule(stack: Stack) -> dict[str, list[Any]]:
    with stack.durable.store.read() as conn:
        rows = queries.list_runs(conn, limit=100_000)
    found: dict[str, list[Any]] = {}
    for row in sorted(rows, key=lambda row: row.scheduled_for or 0):
        if row.schedule:
            found.setdefault(row.schedule, []).append(row)
    return found


def schedule_row(stack: Stack, name: str) -> Any:
    with stack.durable.store.read() as conn:
        return schedule_queries.get_schedule(conn, name)


def executed_ticks(stack: Stack, name: str) -> Counter[float]:
    """How often the job body ran for each tick of ``name`` (the executions file, apart from the journal)."""
    prefix = f"tick:{name}:"
    return Counter(float(row["label"][len(prefix):]) for row in stack.executions_of()
                   if row["label"].startswith(prefix))


def wait_finished(stack: Stack, names: list[str], before: float, timeout: float = 30) -> dict[str, list[Any]]:
    """Until every run of ``names`` for a tick before ``before`` finished; returns the runs by schedule."""
    def done() -> dict[str, list[Any]] | None:
        found = runs_by_schedule(stack)
        pending = [run for name in names for run in found.get(name, [])
                   if run.scheduled_for < before and run.status != "succeeded"]
        return None if pending else found

    result: dict[str, list[Any]] = stack.wait_until(done, timeout, "the schedules' runs to finish", interval=0.2)
    return result


def test_every_two_seconds_on_two_workers_starts_one_run_per_tick(tmp_path: Path, services: None) -> None:
    # catch_up="all": a pass delayed by a loaded machine still starts every tick, so a gap would be a bug.
    stack = Stack("postgresql", tmp_path, cron=[{"task": "tick", "name": "every-2s", "every": 2,
                                                 "overlap": "allow_all", "catch_up": "all"}])
    try:
        stack.start_worker(name="a", wait=False)
        stack.start_worker(name="b")
        stack.wait_for_worker(stack.workers[0])
        time.sleep(10)
        cutoff = time.time() - 1
        runs = wait_finished(stack, ["every-2s"], cutoff)["every-2s"]
        ticks = [run.scheduled_for for run in runs if run.scheduled_for < cutoff]
        assert len(ticks) >= 4, ticks
        assert len(set(ticks)) == len(ticks), "no tick started two runs"
        assert all(b - a == 2 for a, b in itertools.pairwise(ticks)), f"no tick was left out: {ticks}"
        executed = executed_ticks(stack, "every-2s")
        assert {tick: executed[tick] for tick in ticks} == dict.fromkeys(ticks, 1), "each tick's job ran once"
        assert {run.idempotency_key for run in runs} == {f"cron:every-2s:{_iso(run.scheduled_for)}" for run in runs}
    finally:
        stack.close()


CATCH_UP = {"all": {"catch_up": "all"}, "latest": {"catch_up": "latest"}, "none": {"catch_up": "none"},
            "window": {"catch_up": "all", "catch_up_window": 6}}


def test_workers_stopped_across_three_ticks_catch_up_as_documented(tmp_path: Path, services: None) -> None:
    every = 5.0
    stack = Stack("postgresql", tmp_path, cron=[{"task": "tick", "name": name, "every": every,
                                                 "overlap": "allow_all", **policy}
                                                for name, policy in CATCH_UP.items()])
    try:
        worker = stack.start_worker()
        stack.wait_until(lambda: all(runs_by_schedule(stack).get(name) for name in CATCH_UP), 20,
                         "a first run of every schedule")
        stack.stop(worker)
        last = {name: schedule_row(stack, name).last_fired for name in CATCH_UP}
        # Back 1.5 s after the third missed tick became due: later than catch_up="none"'s grace (a quarter of
        # the interval), and well before the next tick, whatever the worker's start-up time.
        third = max(last.values()) + 3 * every
        time.sleep(max(0.0, third + 1.5 - time.time()))
        restarted = time.time()
        stack.start_worker()
        ready = time.time()
        found = wait_finished(stack, list(CATCH_UP), restarted)
        started = {name: {run.scheduled_for for run in found[name]} for name in CATCH_UP}
        missed = {name: [tick for tick in (last[name] + k * every for k in range(1, 5)) if tick <= third]
                  for name in CATCH_UP}
        assert all(len(ticks) >= 3 for ticks in missed.values()), missed
        assert set(missed["all"]) <= started["all"], "all: every missed tick, oldest first"
        assert started["none"] & set(missed["none"]) == set(), "none: no missed tick"
        for name in ("latest", "window"):
            assert started[name] & set(missed[name][:-1]) == set(), f"{name}: the older missed ticks never run"
        if ready < third + every:  # the first pass came before the next tick: it found the newest missed one
            assert third in started["latest"], "latest: the newest missed tick"
        if ready - third <= 6:
            assert third in started["window"], "window: the missed tick inside the 6 s window"
        assert schedule_row(stack, "all").missed == 0
        assert schedule_row(stack, "none").missed == len(missed["none"])
        assert schedule_row(stack, "window").missed >= len(missed["window"]) - 1
    finally:
        stack.close()


OVERLAP = ["skip", "buffer_one", "allow_all"]


def test_overlap_with_a_job_longer_than_its_interval(tmp_path: Path, services: None) -> None:
    stack = Stack("postgresql", tmp_path, cron=[{"task": "tick", "name": policy, "every": 2, "overlap": policy,
                                                 "catch_up": "all", "args": [4.5]} for policy in OVERLAP])
    try:
        stack.start_worker(pool="threads", concurrency=8)
        time.sleep(13)
        cutoff = time.time()
        stack.durable.pause_schedule("allow_all")  # keep the set of runs to check finite
        found = wait_finished(stack, OVERLAP, cutoff)
        spans = {policy: [(run.created_at, run.finished_at, run.scheduled_for) for run in found[policy]
                          if run.scheduled_for < cutoff] for policy in OVERLAP}

        for policy in ("skip", "buffer_one"):
            runs = spans[policy]
            assert len(runs) >= 2, runs
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(runs)), f"{policy}: runs never overlap"
            assert schedule_row(stack, policy).skipped >= 1, f"{policy}: ticks that came meanwhile were dropped"
        skip_ticks = [tick for _, _, tick in spans["skip"]]
        assert all(b - a >= 4 for a, b in itertools.pairwise(skip_ticks)), "skip: ticks during a run are dropped"
        late = [start - tick for start, _, tick in spans["buffer_one"]][1:]
        assert late and max(late) >= 1, "buffer_one: the waiting tick started when the run before it ended"
        assert all(b[0] - a[1] < 2.5 for a, b in itertools.pairwise(spans["buffer_one"])), \
            "buffer_one: the next run starts soon after the previous one ends"

        allowed = spans["allow_all"]
        ticks = [tick for _, _, tick in allowed]
        assert all(b - a == 2 for a, b in itertools.pairwise(ticks)) and len(ticks) >= 5, "allow_all: every tick"
        assert any(a[1] > b[0] for a, b in itertools.pairwise(allowed)), "allow_all: runs overlap"
    finally:
        stack.close()


def test_the_stacks_schedules_are_synced_with_their_spec(tmp_path: Path, services: None) -> None:
    """The workers' sync wrote what the test app declared (what the tests above rely on)."""
    stack = Stack("sqlite", tmp_path, cron=[{"task": "tick", "name": "nightly", "cron": "30 2 * * *",
                                             "tz": "Europe/Berlin", "catch_up": "none"}])
    try:
        stack.start_worker()
        row = schedule_row(stack, "nightly")
        spec = spec_of(row)
        assert (row.source, row.app, row.module, spec.cron, spec.tz) == ("code", "dt_tests", "tests.support.app",
                                                                        "30 2 * * *", "Europe/Berlin")
        assert row.next_fire_at == spec.next_tick(time.time()), "waiting for its next tick"
        assert runs_by_schedule(stack) == {}, "a new schedule never backfills"
    finally:
        stack.close()


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat()
