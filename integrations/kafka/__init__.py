"""Kafka for durable-tasks (``pip install "durable-tasks[kafka]"``): durable timers carried by delay topics, and
the user's own records (``ctx.publish``) produced through the outbox by :class:`KafkaMessageProducer`.

Each timer travels as a :class:`TimerRecord` through tiered delay topics (``durable-timers-100ms`` ...
``durable-timers-86400s``): :class:`KafkaTimerProducer` writes it to the largest tier that fits the time left,
and :class:`KafkaTimerService` reads each tier, forwards a record to a smaller tier when its tier's delay has
passed, and calls ``fire(record)`` once it is due. Only the standard Producer, Consumer and AdminClient APIs
are used, so Apache Kafka, Redpanda and managed Kafka all work. The database stays the truth: a timer Kafka
loses is fired by the core's reconciler.

::

    from durable_tasks.integrations.kafka import KafkaTimerConfig, KafkaTimerService, create_topics

    config = KafkaTimerConfig("kafka-1:9092,kafka-2:9092", replication_factor=3)
    for report in create_topics(config):
        print(report)
"""

from __future__ import annotations

try:
    import confluent_kafka  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from durable_tasks.errors import ConfigurationError

    raise ConfigurationError(
        f"Kafka delay topics need confluent-kafka, which is not installed ({exc}). "
        'Run: pip install "durable-tasks[kafka]"'
    ) from exc

from .config import DEFAULT_TIERS, ClientSettings, KafkaTimerConfig
from .errors import KafkaMessageError, KafkaTimerError
from .messages import KafkaMessageProducer
from .producer import DeliveryCallback, KafkaTimerProducer
from .records import TimerRecord, choose_tier
from .service import FireCallback, KafkaTimerService
from .topics import TopicReport, create_topics

__all__ = [
    "DEFAULT_TIERS",
    "ClientSettings",
    "DeliveryCallback",
    "FireCallback",
    "KafkaMessageError",
    "KafkaMessageProducer",
    "KafkaTimerConfig",
    "KafkaTimerError",
    "KafkaTimerProducer",
    "KafkaTimerService",
    "TimerRecord",
    "TopicReport",
    "choose_tier",
    "create_topics",
]
