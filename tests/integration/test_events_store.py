"""Timers and events against the real databases, without a worker: query plans, races, the upgrade to 0004.

The engine runs in this process (a memory broker; advances are run by hand), so each test controls
exactly who writes when.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from celery import Celery
from sqlalchemy import event

from durable_tasks import Durable, EventDelivery, EventTimeoutError
from durable_tasks.coordinator import advance
from durable_tasks.messages import AdvanceMessage, Message
from durable_tasks.store import event_queries, migrate, queries
from durable_tasks.store.engine import make_engine
from tests.support.publisher import KeptMessages
from tests.support.stack import POSTGRES_URL

pytestmark = pytest.mark.integration

FAR_FUTURE_TIMERS = 100_000


class LockedMessages(KeptMessages):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def publish(self, message: Message) -> None:
        with self.lock:
            super().publish(message)

    def drain(self, durable: Durable) -> None:
        while True:
            with self.lock:
                advances = [message for message in self.messages if isinstance(message, AdvanceMessage)]
                self.messages.clear()
            if not advances:
                return
            for message in advances:
                advance(durable.runtime, message.run_id, consume=message.outbox_id)


def drop_schema(schema: str) -> None:
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


@pytest.fixture
def pg(services: None) -> Iterator[tuple[Durable, KeptMessages, str]]:
    schema = f"dt_ev_{uuid.uuid4().hex[:8]}"
    app = Celery("events-pg", broker="memory://", set_as_current=False)
    durable = Durable(app, store=POSTGRES_URL, schema=schema, auto_migrate=True)
    broker = LockedMessages()
    durable.runtime.publisher = broker
    try:
        durable.store.ensure_ready()
        yield durable, broker, schema
    finally:
        durable.close()
        drop_schema(schema)


def plan_of(durable: Durable, schema: str, run: Any) -> dict[str, Any]:
    """EXPLAIN ANALYZE (with buffers) of the statement that ``run(conn)`` executes last."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(durable.store.engine, "before_cursor_execute", record)
    try:
        with durable.store.begin() as conn:
            run(conn)
    finally:
        event.remove(durable.store.engine, "before_cursor_execute", record)
    statement, parameters = seen[-1]
    with durable.store.begin() as conn:
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        (plan,) = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters).scalar()
    return dict(plan["Plan"])


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


TIMER_INDEXES = {"ix_durable_timers_pending_due_at", "ix_durable_timers_fired_at_due_at"}


def seed_timers(durable: Durable, schema: str, *, due: int) -> None:
    """100,000 timers a month ahead, 1,000 fired long ago, and ``due`` timers due now, on one run."""
    now = time.time()
    with durable.store.begin() as conn:
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        conn.exec_driver_sql("INSERT INTO durable_runs (id, workflow, status, input, fingerprint, created_at, "
                             "updated_at) VALUES ('sleeper', 'w', 'sleeping', '{}', 'f', 0, 0)")
        conn.exec_driver_sql(
            "INSERT INTO durable_timers (run_id, position, purpose, due_at) SELECT 'sleeper', g, 'sleep', "
            f"{now} + 30 * 86400 + g FROM generate_series(1, {FAR_FUTURE_TIMERS}) g")
        conn.exec_driver_sql("INSERT INTO durable_timers (run_id, position, purpose, due_at, fired_at) SELECT "
                             f"'sleeper', -g, 'sleep', {now} - g, {now} FROM generate_series(1, 1000) g")
        conn.exec_driver_sql("INSERT INTO durable_timers (run_id, position, purpose, due_at) SELECT 'sleeper', "
                             f"-1000 - g, 'sleep', {now} - g * 0.001 FROM generate_series(1, {due}) g")
        conn.exec_driver_sql("ANALYZE durable_timers")
        conn.exec_driver_sql("ANALYZE durable_runs")


def timer_reads(plan: dict[str, Any]) -> tuple[int, int]:
    """(rows the timers index returned, buffers the whole statement touched); fails on a scan of the table."""
    on_timers = [node for node in nodes(plan) if node.get("Relation Name") == "durable_timers"
                 or node.get("Index Name", "").startswith("ix_durable_timers")]
    assert not [node for node in on_timers if node["Node Type"] == "Seq Scan"], plan
    index = [node for node in on_timers if node.get("Index Name") in TIMER_INDEXES]
    assert index, plan
    return max(node["Actual Rows"] for node in index), plan.get("Shared Hit Blocks", 0) + plan.get(
        "Shared Read Blocks", 0)


@pytest.mark.parametrize("due", [3, 5000])
def test_the_timer_poll_never_reads_far_future_timers_nor_a_whole_backlog(
        pg: tuple[Durable, KeptMessages, str], due: int) -> None:
    durable, _, schema = pg
    seed_timers(durable, schema, due=due)
    rows, touched = timer_reads(plan_of(durable, schema, lambda conn: queries.any_due_timer(conn, time.time())))
    assert rows <= 1 and touched < 20, (rows, touched)
    rows, touched = timer_reads(plan_of(durable, schema, lambda conn: queries.due_timers(conn, time.time(), 200)))
    assert rows <= min(due, 200) + 1, f"read {rows} timers for a batch of {min(due, 200)}"
    if due < 200:  # a full batch locks 200 timers and their runs: its buffers grow with the batch, not the table
        assert touched < 50, f"{touched} buffers for {due} due timers among {FAR_FUTURE_TIMERS:,} pending"


def test_an_event_and_its_timeout_at_the_same_moment_resolve_to_exactly_one_outcome(
        pg: tuple[Durable, KeptMessages, str]) -> None:
    durable, broker, schema = pg

    @durable.workflow(name="pg.race")
    def race(ctx: Any) -> str:
        try:
            return str(ctx.wait_for_event("approved", "1 hour"))
        except EventTimeoutError:
            return "timed out"

    outcomes: list[str] = []
    for _ in range(12):
        handle = race.run()
        with durable.store.begin() as conn:  # its timeout is due now
            conn.exec_driver_sql(f'UPDATE "{schema}".durable_timers SET due_at = due_at - 3600 '
                                 "WHERE fired_at IS NULL")
        receipt = _send_and_fire_at_once(durable, handle.id)
        broker.drain(durable)
        result = handle.result(timeout=5)
        with durable.store.read() as conn:
            (signal,) = event_queries.list_signals(conn, run_id=handle.id)
            pending = [timer for timer in queries.due_timers(conn, time.time() + 7200, 10) if timer.run_id == handle.id]
        assert pending == [] and durable.steps(handle.id)[0].status != "waiting"
        if result == "yes":
            assert receipt.outcome == EventDelivery.DELIVERED and signal.consumed_at is not None
        else:
            assert result == "timed out" and receipt.outcome == EventDelivery.KEPT and signal.consumed_at is None
        outcomes.append(result)
    assert set(outcomes) <= {"yes", "timed out"}


def _send_and_fire_at_once(durable: Durable, run_id: str) -> Any:
    """Send the event and fire the due timer from two threads released together; returns the receipt."""
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    receipts: list[Any] = []

    def guarded(action: Any) -> None:
        start.wait()
        try:
            action()
        except BaseException as exc:  # a deadlock or any other error fails the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(action,)) for action in (
        lambda: receipts.append(durable.send_event(run_id, "approved", "yes")), durable.timers.fire_due)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [], errors
    (receipt,) = receipts
    return receipt


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_run_started_before_the_events_upgrade_finishes_after_it(
        services: None, tmp_path: Path, kind: str) -> None:
    schema = f"dt_up_{uuid.uuid4().hex[:8]}" if kind == "postgresql" else None
    url = POSTGRES_URL if kind == "postgresql" else f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url, schema=schema)
    try:
        migrate.upgrade(engine, schema, revision="0002")
        now = time.time()
        with engine.begin() as conn:  # what version 0002 wrote: a sleeping run, and a signal row
            if schema:
                conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
            conn.exec_driver_sql(
                "INSERT INTO durable_runs (id, workflow, status, input, fingerprint, created_at, updated_at, "
                f"wake_seq) VALUES ('old-run', 'up.old', 'sleeping', '{{\"args\": [], \"kwargs\": {{}}}}', 'f', "
                f"{now}, {now}, 0)")
            conn.exec_driver_sql(
                "INSERT INTO durable_steps (run_id, position, step_key, kind, name, status, attempt, request, "
                f"created_at, publish_count) VALUES ('old-run', 0, 'nap', 'sleep', 'nap', 'sleeping', 1, "
                f"'{{\"seconds\": 1, \"until\": {now - 1}}}', {now - 2}, 0)")
            conn.exec_driver_sql("INSERT INTO durable_timers (run_id, position, purpose, due_at) VALUES "
                                 f"('old-run', 0, 'sleep', {now - 1})")
            conn.exec_driver_sql("INSERT INTO durable_signals (run_id, name, payload, created_at) VALUES "
                                 f"('old-run', 'legacy', '1', {now})")
        migrate.upgrade(engine, schema)
        assert migrate.current_revision(engine, schema) == migrate.head_revision(engine)
        app = Celery(f"upgrade-{kind}", broker="memory://", set_as_current=False)
        durable = Durable(app, store=url, schema=schema, auto_migrate=False)
        broker = LockedMessages()
        durable.runtime.publisher = broker
        try:
            @durable.workflow(name="up.old")
            def old(ctx: Any) -> Any:
                ctx.sleep("nap", 1)
                return ctx.wait_for_event("go", "1 hour")

            assert durable.timers.fire_due() == 1
            broker.drain(durable)
            assert durable.run("old-run").status == "waiting", "it reached code that did not exist before"
            durable.send_event("old-run", "go", "done")
            broker.drain(durable)
            assert durable.run("old-run").result(timeout=5) == "done"
            with durable.store.read() as conn:
                legacy = next(row for row in event_queries.list_signals(conn) if row.name == "legacy")
            assert legacy.event_id.startswith("legacy-") and legacy.expires_at == pytest.approx(now + 7 * 86400)
        finally:
            durable.close()
    finally:
        engine.dispose()
        if schema:
            drop_schema(schema)
