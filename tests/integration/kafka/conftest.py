"""Kafka timer tests: small tiers (0.5, 1, 2 s) on the session's Tansu broker, a prefix and group per test."""

from __future__ import annotations

import pytest

from durable_tasks.integrations.kafka import KafkaTimerConfig, create_topics
from tests.support.kafka import TansuBroker, make_config


@pytest.fixture
def config(kafka_broker: TansuBroker) -> KafkaTimerConfig:
    """A config of this test's own, its topics created."""
    config = make_config(kafka_broker)
    create_topics(config, timeout=10)
    return config
