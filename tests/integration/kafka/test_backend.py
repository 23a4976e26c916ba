"""The Kafka timer backend end to end: sleeps of real runs travel through the delay topics of a real
Kafka-protocol broker, fire on time and never early, exactly once in the journal, and the database reconciler
fires what Kafka lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from durable_tasks.store.schema import outbox, timers
from tests.support.kafka import GROUP_SETTINGS, TansuBroker
from tests.support.stack import ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIERS = [0.5, 1, 2]


def kafka_stack(broker: TansuBroker, directory: Path, **options: Any) -> Stack:
    tag = uuid.uuid4().hex[:8]
    stack = Stack("postgresql", directory, timer_backend="kafka", kafka_servers=broker.bootstrap,
                  kafka_tiers=TIERS, kafka_topic_prefix=f"dt-{tag}", kafka_group_id=f"dt-{tag}",
                  kafka_consumer_options=GROUP_SETTINGS, **options)
    created = subprocess.run([sys.executable, "-m", "durable_tasks", "kafka", "create-topics", "-A",
                              "tests.support.worker"], env=stack.env, cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count(": created") == len(TIERS), created.stdout
    return stack


def timer_rows(stack: Stack) -> list[Any]:
    with stack.durable.store.read() as conn:
        return list(conn.execute(timers.select()))


def timer_outbox(stack: Stack) -> list[Any]:
    with stack.durable.store.read() as conn:
        return list(conn.execute(outbox.select().where(outbox.c.kind == "timer")))


def test_sleeps_travel_through_kafka_and_fire_on_time_never_early(
        services: None, kafka_broker: TansuBroker, tmp_path: Path) -> None:
    stack = kafka_stack(kafka_broker, tmp_path, timer_grace=30)  # the reconciler stays out of the way
    try:
        stack.start_worker()
        workflow = stack.client.workflows["sleep_until"]
        now = time.time()
        handles = {due: workflow.start(due) for due in (now + 2, now + 3.5)}  # 3.5 s: three hops down the tiers
        for due, handle in handles.items():
            woke = handle.result(timeout=30)
            assert due <= woke < due + 1.5, f"fired {woke - due:+.2f}s from its due time"
        rows = timer_rows(stack)
        assert len(rows) == 2 and all(row.handed_off_at is not None and row.fired_at for row in rows)
        stack.wait_until(lambda: not timer_outbox(stack), 10, "Kafka's confirmations to end the timer rows")
    finally:
        stack.close()


def test_two_timer_services_share_the_topics_and_a_killed_one_loses_nothing(
        services: None, kafka_broker: TansuBroker, tmp_path: Path) -> None:
    stack = kafka_stack(kafka_broker, tmp_path, timer_grace=60, kafka_consume_in_workers=False)
    services_: list[subprocess.Popen[bytes]] = []

    def timer_service(name: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen([sys.executable, "-m", "durable_tasks", "timers", "-A", "tests.support.worker"],
                                   env=stack.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        services_.append(process)
        return process

    try:
        stack.start_worker()
        first, _second = timer_service("timers-1"), timer_service("timers-2")
        workflow = stack.client.workflows["sleep_then_add"]
        handles = [workflow.start(1 + (n % 5) * 0.5, n) for n in range(20)]
        time.sleep(1.5)
        first.send_signal(signal.SIGKILL)  # with timers pending: the other service takes its partitions
        first.wait()
        timer_service("timers-3")
        assert [handle.result(timeout=60) for handle in handles] == [n + 1 for n in range(20)]
        for handle in handles:
            assert stack.execution_counts(handle.id)["t.add"] == 1, "each sleep woke its run once"
        assert all(row.fired_at is not None for row in timer_rows(stack))
    finally:
        for process in services_:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        stack.close()


def test_timers_kafka_lost_are_fired_by_the_reconciler(
        services: None, kafka_broker: TansuBroker, tmp_path: Path) -> None:
    stack = kafka_stack(kafka_broker, tmp_path, timer_grace=2)
    try:
        stack.start_worker()
        workflow = stack.client.workflows["sleep_until"]
        due = time.time() + 3
        handle = workflow.start(due)
        stack.wait_until(lambda: any(row.handed_off_at for row in timer_rows(stack)), 10, "the hand-off to Kafka")
        kafka_broker.restart()  # Tansu keeps nothing: every record and topic is gone
        woke = handle.result(timeout=40)
        assert due + 2 <= woke < due + 10, "fired from the database once the grace ran out, never early"
    finally:
        stack.close()
