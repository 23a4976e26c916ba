"""Prometheus metrics: transition counters and journal gauges, on SQLite without a broker."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest

from durable_tasks import Durable, RetryPolicy
from durable_tasks.integrations.prometheus import JournalCollector, TransitionMetrics
from durable_tasks.messages import StepMessage
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages


def deliver(durable: Durable, message: StepMessage) -> None:
    task = durable.app.tasks[message.task]
    with contextlib.suppress(ConnectionError):
        execute(durable.runtime, task, message, lambda *a, **k: task.run(*a, **k))


def test_counters_and_gauges_follow_a_run_with_a_retry_and_a_sleep(app: Celery, durable: Durable) -> None:
    registry = CollectorRegistry()
    durable.runtime.observers.append(TransitionMetrics(registry))
    registry.register(JournalCollector(durable.store))
    kept = KeptMessages()
    durable.runtime.publisher = kept
    failures = {"left": 1}

    @durable.step(retry=RetryPolicy(max_attempts=3, initial=60, jitter=0))
    @app.task(name="u.flaky", shared=False)
    def flaky(n: int) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("down")
        return n

    @durable.workflow(name="shop.ship")
    def ship(ctx: Any) -> int:
        value = int(ctx.run(flaky, 7))
        ctx.sleep("settle", "1h")
        return value

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    handle = ship.run()
    deliver(durable, kept.last_step())  # fails: a retry waits on a timer
    assert sample("durable_step_attempts_total", step="u.flaky", kind="task", outcome="failed") == 1
    assert sample("durable_step_retries_total", step="u.flaky", kind="task") == 1
    assert sample("durable_timers_pending") == 1 and sample("durable_timers_overdue") == 0

    with durable.store.begin() as conn:  # the backoff is over, and the timer is 2s late
        conn.exec_driver_sql("UPDATE durable_timers SET due_at = ?", (time.time() - 2,))
    assert sample("durable_timers_overdue") == 1 and sample("durable_timers_overdue_seconds") >= 2
    durable.timers.fire_due()
    assert sample("durable_timer_lateness_seconds_count", purpose="retry") == 1
    assert sample("durable_timer_lateness_seconds_sum", purpose="retry") >= 2
    assert sample("durable_outbox_messages", kind="dispatch") == 1, "the second attempt waits for a worker"

    deliver(durable, kept.last_step())  # succeeds; the run sleeps
    assert sample("durable_step_attempts_total", step="u.flaky", kind="task", outcome="succeeded") == 1
    assert sample("durable_step_duration_seconds_count", step="u.flaky", kind="task", outcome="succeeded") == 1
    assert sample("durable_runs", workflow="shop.ship", status="sleeping") == 1
    assert sample("durable_run_transitions_total", workflow="shop.ship", status="sleeping") == 1
    assert sample("durable_outbox_messages", kind="dispatch") == 0

    durable.cancel(handle.id)
    assert sample("durable_runs", workflow="shop.ship", status="cancelled") == 1
    assert sample("durable_runs", workflow="shop.ship", status="sleeping") is None
    assert sample("durable_journal_up") == 1
    text = generate_latest(registry).decode()
    assert "flower_" not in text and all(line.startswith(("#", "durable_")) for line in text.splitlines())


def test_a_scrape_of_an_unreachable_journal_says_so(tmp_path: Any) -> None:
    from durable_tasks.store.database import Store

    registry = CollectorRegistry()
    registry.register(JournalCollector(Store(f"sqlite:///{tmp_path}/missing/dir/journal.sqlite3")))
    assert registry.get_sample_value("durable_journal_up") == 0
