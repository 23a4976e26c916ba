"""The pure rules of the Kafka timer transport: tier choice, decisions, records, config, the pause heap."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from durable_tasks.errors import ConfigurationError
from durable_tasks.integrations.kafka import DEFAULT_TIERS, KafkaTimerConfig, TimerRecord, choose_tier
from durable_tasks.integrations.kafka.pauses import PauseSchedule
from durable_tasks.integrations.kafka.records import Action, decide, ready_at

TIERS = (1.0, 5.0, 30.0)


@pytest.mark.parametrize(("remaining", "tier"), [
    (-10, 1.0), (0, 1.0), (0.99, 1.0), (1, 1.0), (4.99, 1.0), (5, 5.0), (29.9, 5.0), (30, 30.0), (1e9, 30.0)])
def test_choose_tier_takes_the_largest_tier_that_fits_or_the_smallest(remaining: float, tier: float) -> None:
    assert choose_tier(remaining, TIERS) == tier


def test_decide_waits_forwards_or_fires_and_never_fires_early() -> None:
    record = TimerRecord(1, "r", due_at=100.0, enqueued_at=60.0)
    assert decide(record, 30, now=89.9).action is Action.WAIT and decide(record, 30, now=89.9).at == 90.0
    assert decide(record, 30, now=90.0).action is Action.FORWARD
    assert decide(record, 30, now=99.999).action is Action.FORWARD
    assert decide(record, 30, now=100.0).action is Action.FIRE
    # Already due in a large tier (e.g. read late after an outage): fire at once.
    assert decide(TimerRecord(1, "r", due_at=10.0, enqueued_at=5.0), 3600, now=11.0).action is Action.FIRE
    # The smallest tier holds records with less than its delay left: ready when due, not a full tier later.
    short = TimerRecord(1, "r", due_at=100.3, enqueued_at=100.0)
    assert ready_at(short, 1.0) == 100.3 and decide(short, 1.0, now=100.1).at == 100.3


def test_a_record_moved_by_the_rules_fires_once_on_time_whatever_the_lag() -> None:
    """Simulate hops with random processing lag: no record fires early, hops stay few, lag never adds up."""
    rng = random.Random(7)
    for _ in range(300):
        created = 1000.0
        due = created + rng.uniform(0, 100_000)
        now = created
        record = TimerRecord(1, "r", due_at=due, enqueued_at=now)
        tier = choose_tier(due - now, DEFAULT_TIERS)
        while True:
            decision = decide(record, tier, now)
            if decision.action is Action.WAIT:
                now = decision.at + rng.uniform(0, 0.05)
            elif decision.action is Action.FORWARD:
                record = TimerRecord(1, "r", due, enqueued_at=now, hops=record.hops + 1)
                tier = choose_tier(due - now, DEFAULT_TIERS)
                now += rng.uniform(0, 0.05)
            else:
                break
        assert due <= now < due + 0.11
        # Each tier is visited fewer times than the next tier is longer than it, the largest as often as it fits.
        ladder = sum(math.ceil(larger / smaller) - 1 for smaller, larger in itertools.pairwise(DEFAULT_TIERS))
        assert record.hops <= ladder + (due - created) // DEFAULT_TIERS[-1] + 1


def test_records_round_trip_as_compact_json_and_reject_garbage() -> None:
    record = TimerRecord(12, "run-1", due_at=1_700_000_000.123456, enqueued_at=1_699_999_999.5, hops=2)
    assert TimerRecord.decode(record.encode()) == record
    assert record.key == b"run-1"
    assert TimerRecord.decode(b'{"timer_id": 3, "run_id": "x", "due_at": 5, "later": true}') == TimerRecord(3, "x", 5.0)
    for garbage in (None, b"", b"[]", b'{"timer_id": 1}', b'{"timer_id": "a", "run_id": "x", "due_at": 1}'):
        with pytest.raises(ValueError, match="record"):
            TimerRecord.decode(garbage)


def test_config_names_topics_per_tier_and_derives_retention() -> None:
    config = KafkaTimerConfig("k:9092", tiers=(0.25, 1, 90), topic_prefix="t", retention_margin=100)
    assert config.topics() == {"t-250ms": 0.25, "t-1s": 1.0, "t-90s": 90.0}
    assert config.retention_ms(90) == 190_000
    assert config.topic_config(90)["message.timestamp.type"] == "LogAppendTime"
    assert config.tier_for(3) == 1.0
    settings = KafkaTimerConfig("k:9092", client={"security.protocol": "SSL"}, consumer={"fetch.wait.max.ms": 10})
    assert settings.consumer_settings()["security.protocol"] == "SSL"
    assert settings.consumer_settings()["fetch.wait.max.ms"] == 10
    assert settings.consumer_settings()["enable.auto.commit"] is False
    assert settings.producer_settings()["acks"] == "all"


@pytest.mark.parametrize("options", [
    {"tiers": ()}, {"tiers": (5, 1)}, {"tiers": (1, 1)}, {"tiers": (0,)}, {"tiers": (1.0001, 1.0002)},
    {"partitions": 0}, {"topic_prefix": ""}, {"retry_backoff": 0}, {"max_batch": 0}])
def test_config_rejects_values_it_cannot_use(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="KafkaTimerConfig"):
        KafkaTimerConfig("k:9092", **options)  # type: ignore[arg-type]


def test_pause_schedule_keeps_one_live_entry_per_partition() -> None:
    pauses = PauseSchedule()
    pauses.hold(("a", 0), 10.0)
    pauses.hold(("a", 1), 5.0)
    pauses.hold(("a", 0), 3.0)  # re-held earlier: the 10.0 entry goes stale
    assert len(pauses) == 2 and pauses.next_time() == 3.0
    assert pauses.due(4.0) == [("a", 0)]
    pauses.release([("a", 1)])  # revoked
    assert pauses.next_time() is None and pauses.due(100.0) == [] and len(pauses) == 0
    for n in range(1000):  # re-holding the same partition does not grow the heap without bound
        pauses.hold(("b", 0), float(n))
    assert len(pauses._heap) < 100
    assert pauses.snapshot() == {("b", 0): 999.0}
