"""A timer service killed with SIGKILL, and a broker that restarts empty: timers still fire, never early."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from durable_tasks.integrations.kafka import KafkaTimerConfig, KafkaTimerProducer, TimerRecord, create_topics
from tests.support.kafka import TansuBroker, TimerTable, running, send_all, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def start_service(config: KafkaTimerConfig, table: TimerTable, log: Path) -> subprocess.Popen[bytes]:
    """``KafkaTimerService.run`` in a process of its own (assign mode: the group is not what is tested)."""
    options = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.support.kafka_service", json.dumps({**options, "assign": True}),
             str(table.path)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
        )


def test_a_service_killed_with_sigkill_leaves_no_timer_unfired(config: KafkaTimerConfig, tmp_path: Path) -> None:
    table = TimerTable(tmp_path / "timers.sqlite3")
    producer = KafkaTimerProducer(config)
    now = time.time()
    # 1.5 s to 5.4 s ahead: the 2 s, 1 s and 0.5 s tiers all hold records when the kill comes.
    records = [TimerRecord(n, f"run-{n}", now + 1.5 + n * 0.13) for n in range(31)]
    table.add(records)
    send_all(producer, records)
    producer.close()
    service = start_service(config, table, tmp_path / "service.log")
    try:
        assert wait_until(lambda: len(table.fired()) >= 8, timeout=15), (tmp_path / "service.log").read_text()
        service.send_signal(signal.SIGKILL)
        service.wait(5)
        fired_before = len(table.fired())
        assert fired_before < len(records), "the kill must come while timers are pending"
        service = start_service(config, table, tmp_path / "service.log")
        fired = table.wait_fired(len(records), timeout=15)
    finally:
        service.kill()
        service.wait(5)
    assert set(fired) == {record.timer_id for record in records}, (tmp_path / "service.log").read_text()
    deliveries = table.deliveries()
    assert all(at >= due_at for _, at, due_at, *_ in deliveries), "a timer fired early"
    assert len({pid for *_, pid, _ in deliveries}) == 2
    # At least once: records fired but not yet committed when the process died are delivered again.
    assert set(Counter(timer_id for timer_id, *_ in deliveries)) == set(fired)


def test_the_service_survives_a_broker_that_restarts_empty(kafka_broker: TansuBroker,
                                                           config: KafkaTimerConfig) -> None:
    fired: list[TimerRecord] = []
    producer = KafkaTimerProducer(config)
    with running(config, fired.append, assign=False) as service:
        assert wait_until(lambda: bool(service.assignment()), timeout=20)
        send_all(producer, [TimerRecord(1, "before", time.time() + 0.2)])
        assert wait_until(lambda: len(fired) == 1, timeout=5)

        kafka_broker.restart()  # every topic, record and committed offset is gone
        create_topics(config, timeout=10)
        due = time.time() + 0.5
        send_all(producer, [TimerRecord(2, "after", due)])
        assert wait_until(lambda: len(fired) == 2, timeout=30), "the service did not reconnect"
    producer.close()
    assert [record.timer_id for record in fired] == [1, 2]
