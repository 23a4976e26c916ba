"""Timers fire on time and never early, hop across tiers, and survive a failing fire callback."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import pytest

from durable_tasks.integrations.kafka import KafkaTimerConfig, KafkaTimerProducer, TimerRecord
from tests.support.kafka import committed_offsets, running, send_all, wait_until

pytestmark = pytest.mark.integration

# The smallest test tier is 0.5 s; a due record waits at most for the head of its partition plus a fetch.
LATE_TOLERANCE = 1.0


def warm_up(producer: KafkaTimerProducer, fired: list[tuple[TimerRecord, float]]) -> None:
    """Fire one timer first, so the service has fetched its start offsets before the measured timers."""
    send_all(producer, [TimerRecord(0, "warm-up", time.time())])
    assert wait_until(lambda: bool(fired), timeout=10)
    fired.clear()


def test_a_two_second_timer_fires_within_a_second_of_due_and_never_early(config: KafkaTimerConfig) -> None:
    fired: list[tuple[TimerRecord, float]] = []
    producer = KafkaTimerProducer(config)
    with running(config, lambda record: fired.append((record, time.time()))):
        warm_up(producer, fired)
        now = time.time()
        sent = send_all(producer, [TimerRecord(1, "run-a", now + 2.0), TimerRecord(2, "run-b", now + 0.3),
                                   TimerRecord(3, "run-c", now + 1.2), TimerRecord(4, "run-d", now - 5)])
        assert wait_until(lambda: len(fired) >= 4, timeout=2.0 + LATE_TOLERANCE + 1)
        time.sleep(0.3)  # would catch a second firing
    producer.close()
    assert sorted(record.timer_id for record, _ in fired) == [1, 2, 3, 4]
    assert {record.timer_id: record.due_at for record, _ in fired} == {r.timer_id: r.due_at for r in sent}
    for record, at in fired:
        assert at >= record.due_at, f"timer {record.timer_id} fired {record.due_at - at:.3f} s early"
        assert at - max(record.due_at, sent[0].enqueued_at) < LATE_TOLERANCE, (record, at)


def test_a_timer_hops_down_three_tiers_and_fires_once_on_time(config: KafkaTimerConfig) -> None:
    fired: list[tuple[TimerRecord, float]] = []
    producer = KafkaTimerProducer(config)
    with running(config, lambda record: fired.append((record, time.time()))):
        warm_up(producer, fired)
        # 3.75 s: 2 s tier, then 1 s (1.75 left), 0.5 s (0.75 left), 0.5 s again (0.25 left, ready when due).
        [sent] = send_all(producer, [TimerRecord(7, "run-hops", time.time() + 3.75)])
        assert wait_until(lambda: bool(fired), timeout=3.75 + LATE_TOLERANCE + 1)
        time.sleep(0.5)
    producer.close()
    [(record, at)] = fired
    assert record.hops == 3
    assert record.due_at == sent.due_at and record.timer_id == 7
    assert sent.due_at <= at < sent.due_at + LATE_TOLERANCE
    # Closing committed every record read: the warm-up and three hops in the 0.5 s tier, one in each other tier.
    per_topic = Counter[str]()
    for (topic, _), offset in committed_offsets(config).items():
        per_topic[topic] += offset
    assert per_topic == {config.topic(0.5): 3, config.topic(1.0): 1, config.topic(2.0): 1}


def test_a_failing_fire_is_retried_with_backoff_and_its_offset_committed_only_after_success(
        config: KafkaTimerConfig) -> None:
    calls: list[float] = []
    database_up = threading.Event()

    def fire(record: TimerRecord) -> None:
        calls.append(time.time())
        if not database_up.is_set():
            raise ConnectionError("database down")

    producer = KafkaTimerProducer(config)
    with running(config, fire):
        send_all(producer, [TimerRecord(9, "run-db-down", time.time() + 0.2)])
        # Backoff 0.2, 0.4, 0.8 s: the third call comes about 0.6 s after the first.
        assert wait_until(lambda: len(calls) >= 3, timeout=5)
        assert committed_offsets(config) == {}
        database_up.set()
        assert wait_until(lambda: sum(committed_offsets(config).values()) == 1, timeout=5)
    producer.close()
    assert 4 <= len(calls) <= 5, "a failing fire waits, it does not spin"
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps


def test_pending_timers_leave_one_paused_entry_per_partition_not_one_per_timer(config: KafkaTimerConfig) -> None:
    producer = KafkaTimerProducer(config)
    with running(config, lambda record: None) as service:
        now = time.time()
        send_all(producer, [TimerRecord(n, f"run-{n}", now + 60 + n / 100) for n in range(400)])
        # Every record sits in the 2 s tier; each of its 4 partitions is paused at its head.
        assert wait_until(lambda: len(service.paused()) == 4, timeout=5)
        assert {topic for topic, _ in service.paused()} == {config.topic(2.0)}
        assert all(now + 1.5 < at <= now + 2.5 for at in service.paused().values())
    producer.close()
