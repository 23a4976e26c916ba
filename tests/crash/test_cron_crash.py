"""kill -9 of a worker at the moment it fires a tick: the tick still runs, once.

The test holds a SHARE lock on ``durable_runs``, so the worker that fires the next tick stops inside its
firing transaction, at the insert of the tick's run, with the schedule's row locked. That is the moment the
worker is killed. Nothing of its transaction commits; another worker fires the tick again and finds no run
for it, so it starts exactly one.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy

from durable_tasks.store import queries, schedule_queries
from tests.support.stack import POSTGRES_URL, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kill_9_while_a_tick_fires_runs_the_tick_once(tmp_path: Path, services: None) -> None:
    stack = Stack("postgresql", tmp_path, cron=[{"task": "tick", "name": "killed", "every": 2,
                                                 "overlap": "allow_all", "catch_up": "all"}])
    blocker = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        first = stack.start_worker(name="first")
        stack.wait_until(lambda: runs(stack), 20, "the schedule's first run")
        with blocker.connect() as conn:
            conn.exec_driver_sql(f'SET search_path TO "{stack.schema}"')
            conn.exec_driver_sql("LOCK TABLE durable_runs IN SHARE MODE")  # blocks inserts until we let go
            stack.wait_until(lambda: inserting(blocker, stack.schema or ""), 10, "the worker to fire the next tick")
            with stack.durable.store.read() as read:
                row = schedule_queries.get_schedule(read, "killed")  # the firing transaction has not committed
            tick = row.next_fire_at
            stack.kill(first)
            conn.rollback()  # releases the table lock; the dead worker's transaction can never commit
        assert tick not in [run.scheduled_for for run in runs(stack)]

        stack.start_worker(name="second")
        stack.wait_until(lambda: any(run.scheduled_for == tick and run.status == "succeeded" for run in runs(stack)),
                         30, "the killed tick to run")
        time.sleep(4)
        cutoff = time.time() - 1
        stack.wait_until(lambda: all(run.status == "succeeded" for run in runs(stack) if run.scheduled_for < cutoff),
                         30, "the runs before the cutoff to finish")
        ticks = [run.scheduled_for for run in runs(stack) if run.scheduled_for < cutoff]
        assert Counter(ticks)[tick] == 1, "the tick being fired when its worker died started one run"
        assert len(set(ticks)) == len(ticks), "no tick started two runs"
        assert all(b - a == 2 for a, b in itertools.pairwise(ticks)), f"no tick was lost: {ticks}"
        executed = Counter(float(row["label"].rsplit(":", 1)[1]) for row in stack.executions_of()
                           if row["label"].startswith("tick:killed:"))
        assert executed[tick] == 1, "its job ran once"
    finally:
        blocker.dispose()
        stack.close()


def runs(stack: Stack) -> list[object]:
    with stack.durable.store.read() as conn:
        rows = [row for row in queries.list_runs(conn, limit=10_000) if row.schedule == "killed"]
    return sorted(rows, key=lambda row: row.scheduled_for)


def inserting(engine: sqlalchemy.Engine, schema: str) -> bool:
    """True while a backend waits for our lock to insert a run into this stack's ``durable_runs``."""
    with engine.connect() as conn:  # pg_stat_activity is a snapshot per transaction: a fresh one each time
        waiting = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE %s",
            (f"INSERT INTO {schema}.durable_runs%",)).scalar()
    return bool(waiting)
