"""Create the delay topics, one per tier, and report how existing ones differ from what the config asks."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from .config import KafkaTimerConfig
from .errors import KafkaTimerError

REPORTED_SETTINGS = ("retention.ms", "cleanup.policy", "message.timestamp.type")


@dataclass(frozen=True)
class TopicReport:
    """One tier topic after :func:`create_topics`: created now or found, with the settings the broker reports.

    ``problems`` lists the differences from the config that matter, each with what to do; empty when none.
    """

    topic: str
    tier: float
    created: bool
    partitions: int
    settings: dict[str, str]
    problems: tuple[str, ...] = ()

    def __str__(self) -> str:
        state = "created" if self.created else "exists"
        settings = ", ".join(f"{key}={value}" for key, value in self.settings.items())
        lines = [f"{self.topic}: {state}, {self.partitions} partitions, {settings}"]
        return "\n  ".join(lines + [f"! {problem}" for problem in self.problems])


def create_topics(config: KafkaTimerConfig, *, timeout: float = 30) -> list[TopicReport]:
    """Create the topic of every tier that does not exist yet; report every tier topic, smallest tier first.

    New topics get ``config.partitions`` partitions, ``config.replication_factor`` replicas and the configs of
    :meth:`KafkaTimerConfig.topic_config` (``retention.ms`` = tier + ``retention_margin``, ``LogAppendTime``).
    Existing topics are left as they are. Safe to run at every deploy.

    >>> for report in create_topics(KafkaTimerConfig("127.0.0.1:9092")):  # doctest: +SKIP
    ...     print(report)
    durable-timers-1s: created, 8 partitions, retention.ms=86401000, ...

    Raises :class:`KafkaTimerError` when Kafka is out of reach or refuses to create a topic.
    """
    admin = AdminClient(config.admin_settings())
    tiers = config.topics()
    wanted = [NewTopic(topic, num_partitions=config.partitions, replication_factor=config.replication_factor,
                       config=config.topic_config(tier)) for topic, tier in tiers.items()]
    futures = admin.create_topics(wanted, request_timeout=timeout, operation_timeout=timeout)
    created = {topic: _created(topic, future, timeout, config) for topic, future in futures.items()}
    partitions = _partition_counts(admin, list(tiers), timeout, config)
    settings = _settings(admin, list(tiers), timeout, config)
    return [
        TopicReport(topic, tier, created[topic], partitions[topic], settings[topic],
                    _problems(config, tier, partitions[topic], settings[topic]))
        for topic, tier in tiers.items()
    ]


def _created(topic: str, future: Future[Any], timeout: float, config: KafkaTimerConfig) -> bool:
    try:
        future.result(timeout)
    except KafkaException as exc:
        if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise KafkaTimerError(f"Kafka at {config.bootstrap_servers} did not create {topic}: {exc}. Check the "
                              "brokers, the replication factor and the ACLs of this client.") from exc
    return True


def _partition_counts(admin: AdminClient, topics: list[str], timeout: float,
                      config: KafkaTimerConfig) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaTimerError(f"Cannot read topic metadata from {config.bootstrap_servers}: {exc}.") from exc
    return {topic: len(metadata.topics[topic].partitions) if topic in metadata.topics else 0 for topic in topics}


def _settings(admin: AdminClient, topics: list[str], timeout: float,
              config: KafkaTimerConfig) -> dict[str, dict[str, str]]:
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic) for topic in topics],
                                     request_timeout=timeout)
    found: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        try:
            entries = future.result(timeout)
        except KafkaException as exc:
            raise KafkaTimerError(f"Cannot read the configs of {resource.name} from {config.bootstrap_servers}: "
                                  f"{exc}.") from exc
        found[resource.name] = {key: str(entries[key].value) for key in REPORTED_SETTINGS if key in entries}
    return found


def _problems(config: KafkaTimerConfig, tier: float, partitions: int, settings: dict[str, str]) -> tuple[str, ...]:
    problems = []
    if partitions != config.partitions:
        problems.append(f"has {partitions} partitions, the config asks for {config.partitions}: timer services "
                        "beyond the partition count stay idle (add partitions with kafka-topics --alter)")
    retention = settings.get("retention.ms")
    if retention is not None and retention.lstrip("-").isdigit() and 0 <= int(retention) < config.retention_ms(tier):
        problems.append(f"retention.ms={retention} is shorter than the tier plus retention_margin "
                        f"({config.retention_ms(tier)}): records may be deleted before a service reads them "
                        f"(kafka-configs --alter --add-config retention.ms={config.retention_ms(tier)})")
    if "compact" in settings.get("cleanup.policy", "delete"):
        problems.append("cleanup.policy compacts by key (the run id) and would drop timers: use cleanup.policy=delete")
    if settings.get("message.timestamp.type", "LogAppendTime") != "LogAppendTime":
        problems.append("message.timestamp.type is CreateTime: retention then counts from the producers' clocks; "
                        "LogAppendTime is recommended (the transport itself never reads record timestamps)")
    return tuple(problems)
