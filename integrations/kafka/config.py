"""Settings of the Kafka timer transport: tiers, topic names, and the client settings derived from them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from durable_tasks.errors import ConfigurationError

from .records import choose_tier

ClientSettings = Mapping[str, Any]
"""librdkafka settings (``{"security.protocol": "SASL_SSL", ...}``), passed to confluent-kafka unchanged."""

# The smallest tier bounds lateness: a partition's head can hold up the records behind it for up to that long.
# Measured (benchmarks/kafka_timers.py): starting at 1 s, p99 lateness was 1.0 s; with 0.1 and 0.5 s below it,
# 0.16 s, for about 1.7 more hops per timer.
DEFAULT_TIERS: tuple[float, ...] = (0.1, 0.5, 1, 5, 30, 120, 600, 3600, 21600, 86400)
ONE_DAY = 86400.0

client_logger = logging.getLogger("durable_tasks.integrations.kafka.client")


@dataclass(frozen=True)
class KafkaTimerConfig:
    """Where the delay topics live and how the transport talks to Kafka.

    ``tiers`` are delays in seconds, ascending; each has a topic named ``{topic_prefix}-{label}`` such as
    ``durable-timers-30s`` (``-500ms`` for fractions). A record becomes ready in a tier when the tier's delay
    has passed since it entered, so the smallest tier bounds how late a partition's head can hold up the
    records behind it.

    ``retention_margin`` (one day) is added to each tier's delay to get the topic's ``retention.ms``: a record
    is read about one tier delay after it was written, and the margin is how long all timer services may be
    down before Kafka deletes records they have not read (the reconciler then fires those timers from the
    database, late). ``client`` applies to every client (security settings); ``producer``, ``consumer`` and
    ``admin`` override per role; ``topic_settings`` adds topic configs (``segment.ms``, ``min.insync.replicas``).

    >>> config = KafkaTimerConfig("kafka-1:9092,kafka-2:9092", tiers=(0.5, 2, 10))
    >>> config.topic(0.5), config.tier_for(7.3)
    ('durable-timers-500ms', 2.0)
    """

    bootstrap_servers: str
    tiers: tuple[float, ...] = DEFAULT_TIERS
    topic_prefix: str = "durable-timers"
    group_id: str = "durable-timers"
    partitions: int = 8
    replication_factor: int = -1
    """-1 takes the broker's ``default.replication.factor``; use 3 in production."""
    retention_margin: float = ONE_DAY
    max_batch: int = 500
    """Records taken from the consumer per poll."""
    forward_timeout: float = 10.0
    """How long the service waits for Kafka to confirm forwarded records before it retries them."""
    commit_interval: float = 1.0
    """Offsets are committed at most this often (and on revoke and close): a crash replays up to this much."""
    retry_backoff: float = 0.5
    retry_backoff_max: float = 30.0
    """A partition whose fire callback raised is retried after ``retry_backoff``, doubling up to this."""
    client: ClientSettings = field(default_factory=dict)
    producer: ClientSettings = field(default_factory=dict)
    consumer: ClientSettings = field(default_factory=dict)
    admin: ClientSettings = field(default_factory=dict)
    topic_settings: ClientSettings = field(default_factory=dict)

    def __post_init__(self) -> None:
        tiers = tuple(float(tier) for tier in self.tiers)
        if not tiers or any(tier < 0.001 for tier in tiers) or list(tiers) != sorted(set(tiers)):
            raise ConfigurationError(
                f"KafkaTimerConfig.tiers must be distinct delays of at least 1 ms in ascending order, got "
                f"{self.tiers!r}; for example (1, 5, 30, 120, 600, 3600, 21600, 86400)."
            )
        labels = [_label(tier) for tier in tiers]
        if len(set(labels)) != len(labels):
            raise ConfigurationError(f"KafkaTimerConfig.tiers {self.tiers!r} give two topics the same name "
                                     f"({labels}); use delays that differ by at least 1 ms.")
        if self.partitions < 1 or not self.bootstrap_servers or not self.topic_prefix or not self.group_id:
            raise ConfigurationError(
                "KafkaTimerConfig needs bootstrap_servers, topic_prefix and group_id, and at least one partition; "
                f"got servers={self.bootstrap_servers!r}, prefix={self.topic_prefix!r}, group={self.group_id!r}, "
                f"partitions={self.partitions}."
            )
        if (self.max_batch < 1 or self.forward_timeout <= 0 or self.commit_interval < 0
                or not 0 < self.retry_backoff <= self.retry_backoff_max):
            raise ConfigurationError(
                f"KafkaTimerConfig needs max_batch >= 1, forward_timeout > 0, commit_interval >= 0 and "
                f"0 < retry_backoff <= retry_backoff_max; got {self.max_batch}, {self.forward_timeout}, "
                f"{self.commit_interval}, {self.retry_backoff}, {self.retry_backoff_max}."
            )
        object.__setattr__(self, "tiers", tiers)

    def topic(self, tier: float) -> str:
        """The topic of ``tier``, e.g. ``durable-timers-30s``."""
        return f"{self.topic_prefix}-{_label(tier)}"

    def topics(self) -> dict[str, float]:
        """Every tier topic with its delay, smallest first."""
        return {self.topic(tier): tier for tier in self.tiers}

    def tier_for(self, remaining: float) -> float:
        """The tier a record with ``remaining`` seconds to go is written to (see :func:`choose_tier`)."""
        return choose_tier(remaining, self.tiers)

    def retention_ms(self, tier: float) -> int:
        """``retention.ms`` of the tier's topic: its delay plus ``retention_margin``."""
        return round((tier + self.retention_margin) * 1000)

    def topic_config(self, tier: float) -> dict[str, str]:
        """The topic configs :func:`create_topics` asks for."""
        return {
            "retention.ms": str(self.retention_ms(tier)),
            "cleanup.policy": "delete",
            # Retention then counts from the broker's clock; the transport itself never reads broker timestamps.
            "message.timestamp.type": "LogAppendTime",
            **{key: str(value) for key, value in self.topic_settings.items()},
        }

    def producer_settings(self) -> dict[str, Any]:
        """confluent-kafka ``Producer`` settings: every record acknowledged by all in-sync replicas."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            # Not idempotent: a duplicate record only fires twice (firing is idempotent), while an idempotent
            # producer stays stuck on UNKNOWN_PRODUCER_ID when the cluster behind its address lost its state.
            "enable.idempotence": False,
            "acks": "all",
            "linger.ms": 5,
            "logger": client_logger,
            **self.client,
            **self.producer,
        }

    def consumer_settings(self) -> dict[str, Any]:
        """confluent-kafka ``Consumer`` settings: manual commits, no prefetch beyond a few MB."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # A partition resumed while a fetch is waiting joins the next fetch: this bounds that wait.
            "fetch.wait.max.ms": 50,
            # Pausing drops a partition's prefetched records, so prefetch little: memory stays flat whatever the
            # backlog, and a full queue must not postpone fetching for librdkafka's default of a whole second.
            "max.partition.fetch.bytes": 262144,
            "fetch.max.bytes": 8388608,
            "queued.min.messages": 1000,
            "queued.max.messages.kbytes": 4096,
            "fetch.queue.backoff.ms": 10,
            "logger": client_logger,
            **self.client,
            **self.consumer,
        }

    def admin_settings(self) -> dict[str, Any]:
        """confluent-kafka ``AdminClient`` settings."""
        return {"bootstrap.servers": self.bootstrap_servers, "logger": client_logger, **self.client, **self.admin}


def _label(tier: float) -> str:
    """``30s`` for whole seconds, ``500ms`` otherwise."""
    return f"{int(tier)}s" if float(tier).is_integer() else f"{round(tier * 1000)}ms"
