"""The user's own Kafka records (``ctx.publish``, ``current_step().publish``), produced after their commit.

The core hands each committed record to :class:`KafkaMessageProducer` (its ``TopicProducer`` protocol) and ends
the record's outbox row when Kafka confirms it. A record whose confirmation never came is produced again by the
relay with the same ``durable-message-id`` header, so consumers drop duplicates by that id.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from durable_tasks.messages import TopicMessage
from durable_tasks.outgoing import Confirmation

from .config import client_logger
from .errors import KafkaMessageError

MESSAGE_ID_HEADER = "durable-message-id"
RUN_HEADER = "durable-run"


def encode_value(value: Any) -> bytes | None:
    """The record's value: bytes as they are, text as UTF-8, None as a tombstone, anything else as JSON."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


class KafkaMessageProducer:
    """Produces the user's records and reports Kafka's confirmations; one per process, thread-safe.

    Every record is acknowledged by all in-sync replicas (``acks=all``). A daemon thread serves delivery reports,
    so confirmations arrive while the process does other work. ``settings`` are librdkafka settings over these
    defaults (security, ``linger.ms``, ...)::

        producer = KafkaMessageProducer("kafka-1:9092,kafka-2:9092", {"security.protocol": "SASL_SSL"})
    """

    def __init__(self, bootstrap_servers: str, settings: Mapping[str, Any] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            # Duplicates are dropped by id downstream; an idempotent producer can stay stuck on
            # UNKNOWN_PRODUCER_ID when the cluster behind its address lost its state.
            "enable.idempotence": False,
            "linger.ms": 5,
            "logger": client_logger,
            **(settings or {}),
        })
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="durable-kafka-messages", daemon=True)
        self._thread.start()

    def produce(self, message: TopicMessage, on_confirmed: Confirmation) -> None:
        """Queue one record; ``on_confirmed(message, error)`` runs on the delivery thread once Kafka answers.

        Raises :class:`KafkaMessageError` when the local queue stays full (Kafka out of reach for a while); the
        record stays in the outbox and is sent again.
        """

        def delivered(error: KafkaError | None, _record: Message) -> None:
            on_confirmed(message, None if error is None else KafkaMessageError(
                f"Kafka refused message {message.id} of run {message.run_id} for topic {message.topic}: "
                f"{error.str()}. It stays in the outbox and is sent again; check the brokers and the topic."))

        key = message.key.encode() if isinstance(message.key, str) else message.key
        headers: list[tuple[str, str | bytes | None]] = [(MESSAGE_ID_HEADER, message.id.encode()),
                                                         (RUN_HEADER, message.run_id.encode())]
        try:
            self._producer.produce(message.topic, encode_value(message.value), key, headers=headers,
                                   on_delivery=delivered)
        except BufferError:
            raise KafkaMessageError(
                f"Cannot queue message {message.id} of run {message.run_id} for topic {message.topic}: the "
                f"producer's queue is full because Kafka at {self.bootstrap_servers} has not confirmed earlier "
                "records. It stays in the outbox and is sent again."
            ) from None

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for Kafka to confirm what was produced, then stop the delivery thread.

        Records still unconfirmed stay in the outbox (the relay sends them again).
        """
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._producer.flush(timeout)
