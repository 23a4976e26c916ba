"""Two services in one consumer group split the partitions, and each timer fires exactly once."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest

from durable_tasks.integrations.kafka import KafkaTimerConfig, KafkaTimerProducer, TimerRecord
from tests.support.kafka import TimerTable, running, send_all, wait_until

pytestmark = pytest.mark.integration


def test_two_services_in_one_group_share_partitions_and_fire_each_timer_once(
        config: KafkaTimerConfig, tmp_path: Path) -> None:
    table = TimerTable(tmp_path / "timers.sqlite3")
    producer = KafkaTimerProducer(config)
    everything = {(topic, number) for topic in config.topics() for number in range(config.partitions)}
    with ExitStack() as services:
        first = services.enter_context(running(config, lambda record: table.fire(record, "first"), assign=False))
        second = services.enter_context(running(config, lambda record: table.fire(record, "second"), assign=False))

        def split() -> bool:
            mine, theirs = set(first.assignment()), set(second.assignment())
            return bool(mine) and bool(theirs) and not mine & theirs and mine | theirs == everything

        assert wait_until(split, timeout=20), (first.assignment(), second.assignment())
        now = time.time()
        records = [TimerRecord(n, f"run-{n}", now + 1 + (n % 10) / 5) for n in range(40)]
        table.add(records)
        send_all(producer, records)
        assert len(table.wait_fired(40, timeout=10)) == 40
        time.sleep(0.5)  # a duplicate delivery would show up here
    producer.close()
    deliveries = table.deliveries()
    assert Counter(timer_id for timer_id, *_ in deliveries) == Counter(range(40))
    assert all(at >= due_at for _, at, due_at, *_ in deliveries)
    by_service = Counter(service for *_, service in deliveries)
    assert by_service["first"] > 0 and by_service["second"] > 0, by_service
