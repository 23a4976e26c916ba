"""A run's own Kafka records (``ctx.publish``, ``current_step().publish``) on a real Kafka-protocol broker (Tansu),
with a real worker and PostgreSQL: each record arrives once, with its id, and its outbox row ends."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.kafka import TansuBroker
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def read_all(broker: TansuBroker, topic: str, expected: int, timeout: float = 20) -> list[tuple[bytes, dict, bytes]]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[tuple[bytes, dict, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            record = consumer.poll(0.2)
            if record is None or record.error():
                continue
            records.append((record.key(), {k: v.decode() for k, v in record.headers() or []}, record.value()))
        time.sleep(0.5)  # nothing more arrives: a duplicate would show here
        while (record := consumer.poll(0.2)) is not None:
            if not record.error():
                records.append((record.key(), {k: v.decode() for k, v in record.headers() or []}, record.value()))
    finally:
        consumer.close()
    return records


def test_records_of_a_workflow_and_a_step_arrive_once_with_their_ids(
        services: None, kafka_broker: TansuBroker, tmp_path: Path) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(10)
    stack = Stack("postgresql", tmp_path, kafka_servers=kafka_broker.bootstrap)
    try:
        stack.start_worker()
        handle = stack.client.workflows["publish"].start(topic, 7)
        assert handle.result(timeout=30) == [f"{handle.id}:{topic}", f"{handle.id}:t.publisher:1"]
        records = read_all(kafka_broker, topic, 2)
        assert sorted((key, headers["durable-message-id"], json.loads(value)) for key, headers, value in records) == [
            (b"step", f"{handle.id}:t.publisher:1", {"from": "step", "value": 7}),
            (b"workflow", f"{handle.id}:{topic}", {"from": "workflow", "value": 7}),
        ]
        assert {headers["durable-run"] for _, headers, _ in records} == {handle.id}
        stack.wait_until(lambda: not stack.outbox(handle.id), 10, "Kafka's confirmations to end the rows")
    finally:
        stack.close()
