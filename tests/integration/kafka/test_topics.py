"""create_topics creates one topic per tier, then reports existing topics and how they differ from the config."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from durable_tasks.integrations.kafka import create_topics
from tests.support.kafka import TansuBroker, make_config

pytestmark = pytest.mark.integration


def test_create_topics_creates_then_reports_existing_topics(kafka_broker: TansuBroker) -> None:
    config = make_config(kafka_broker, retention_margin=3600)
    created = create_topics(config, timeout=10)
    assert [(r.topic, r.tier, r.created, r.partitions) for r in created] == [
        (config.topic(0.5), 0.5, True, 4), (config.topic(1.0), 1.0, True, 4), (config.topic(2.0), 2.0, True, 4)]
    assert created[0].topic.endswith("-500ms") and created[2].topic.endswith("-2s")
    for report in created:
        assert report.settings == {"retention.ms": str(round((report.tier + 3600) * 1000)), "cleanup.policy": "delete",
                                   "message.timestamp.type": "LogAppendTime"}
        assert report.problems == ()

    again = create_topics(config, timeout=10)
    assert [r.created for r in again] == [False, False, False]
    assert [(r.partitions, r.settings) for r in again] == [(r.partitions, r.settings) for r in created]


def test_create_topics_reports_what_an_existing_topic_gets_wrong(kafka_broker: TansuBroker) -> None:
    config = make_config(kafka_broker)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    futures = admin.create_topics([NewTopic(config.topic(1.0), num_partitions=2, replication_factor=1,
                                            config={"retention.ms": "1500", "cleanup.policy": "compact",
                                                    "message.timestamp.type": "CreateTime"})])
    futures[config.topic(1.0)].result(10)

    reports = {report.tier: report for report in create_topics(config, timeout=10)}
    assert [reports[tier].created for tier in config.tiers] == [True, False, True]
    existing = reports[1.0]
    assert existing.partitions == 2 and existing.settings["retention.ms"] == "1500"
    assert len(existing.problems) == 4, existing.problems
    assert "2 partitions" in existing.problems[0] and "retention.ms=1500" in existing.problems[1]
    assert "cleanup.policy" in existing.problems[2] and "CreateTime" in existing.problems[3]
    assert str(existing).startswith(f"{config.topic(1.0)}: exists, 2 partitions, retention.ms=1500")
