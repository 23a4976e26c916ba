"""Settings of a :class:`~durable_tasks.Durable` instance, from arguments or the Celery app's ``conf``.

Every setting ``x`` can also be given as ``app.conf.durable_x`` (for example ``durable_store``), so a
project configures durable-tasks where it already configures Celery. Arguments win over ``app.conf``,
which wins over the environment variable ``DURABLE_STORE`` and the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .durations import parse_duration
from .errors import ConfigurationError
from .serialization import DEFAULT_MAX_PAYLOAD_BYTES
from .store.engine import check_sqlite_synchronous, default_store_url

MIN_SECRET_BYTES = 16


@dataclass(frozen=True)
class Settings:
    """All knobs, with defaults that work for a user who configures nothing.

    Durations accept seconds or text such as ``"30s"``.
    """

    store: str = ""
    """SQLAlchemy URL of the journal; default ``$DURABLE_STORE`` or ``sqlite:///durable.sqlite3``."""
    schema: str | None = None
    """PostgreSQL schema for the tables (default: the connection's search path)."""
    auto_migrate: bool | None = None
    """Create/upgrade the tables on first use; default True on SQLite, False on PostgreSQL."""
    queue: str | None = None
    """Celery queue of the coordinator's ``durable_tasks.advance`` task (default: Celery's default queue)."""
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    """Largest JSON value (argument, result) that may be journaled."""
    heartbeat_interval: float = 2.0
    """How often each worker process that takes steps writes its heartbeat row."""
    worker_timeout: float = 30.0
    """A worker whose heartbeat is older than this is dead: its steps are dispatched again."""
    redelivery_after: float = 60.0
    """An outbox message not consumed within this time (lost by the broker) is published again."""
    timer_interval: float = 0.25
    """How often the worker's timer service looks for due timers."""
    sweep_interval: float = 5.0
    """How often the sweeper looks for dead workers and stalled runs."""
    max_lost_attempts: int = 5
    """Attempts of one step lost with their worker before the run is parked as failed (crash loops)."""
    worker_services: bool = True
    """Run the relay, timers, heartbeats and sweeper inside every Celery worker (a bootstep)."""
    retention: bool = True
    """Let the worker services delete expired journal rows (the three settings below), like Celery's
    ``result_expires``; ``durable runs prune`` stays for manual use."""
    retain_finished_runs: float = 30 * 86400.0
    """Succeeded, failed and cancelled runs (with their journals) are deleted this long after they finished;
    0 keeps them forever."""
    retain_fired_timers: float = 86400.0
    """Timers are deleted this long after they fired (or were cancelled); 0 keeps them."""
    retain_attempts: float = 30 * 86400.0
    """Attempt rows of steps that are no longer pending are deleted this long after the attempt started; 0
    keeps them (those of finished runs go with the run)."""
    retention_interval: float = 60.0
    """How often the worker services delete a batch of each."""
    retention_batch: int = 500
    """Rows deleted per batch and kind: small transactions that never hold locks for long."""
    sqlite_synchronous: str = "full"
    """SQLite's ``PRAGMA synchronous``: ``"full"`` (a commit is on disk before a step counts as done) or
    ``"normal"`` (faster commits; a power loss may undo the last ones, and their steps run again)."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port from every worker (needs ``durable-tasks[metrics]``)."""
    metrics_address: str = "127.0.0.1"
    """Address the metrics endpoint listens on; ``0.0.0.0`` to be scraped from other hosts."""
    max_sleep: float = 366 * 86400.0
    """Longest sleep or event timeout a workflow may ask for; a longer one is refused (usually a unit mistake)."""
    event_retention: float = 7 * 86400.0
    """How long an event that no run waits for yet is kept for the first wait that matches it."""
    event_secret: str | None = field(default=None, repr=False)
    """Secret that signs event tokens (``durable.event_token``); the same on every process that checks them."""
    timer_backend: str = "database"
    """``"database"`` (workers poll the timers table) or ``"kafka"`` (timers travel through Kafka delay topics;
    needs ``durable-tasks[kafka]`` and ``kafka_servers``; see docs/operations.md)."""
    timer_grace: float = 30.0
    """With Kafka: a timer still pending this long after its due time is fired from the database (the
    reconciler), whatever Kafka did."""
    kafka_servers: str = ""
    """Kafka's ``bootstrap.servers`` for the delay topics."""
    kafka_topic_prefix: str = "durable-timers"
    kafka_group_id: str = "durable-timers"
    kafka_partitions: int = 8
    kafka_tiers: tuple[float, ...] = ()
    """Delay tiers in seconds, ascending (default: the transport's, 0.1 s to one day)."""
    kafka_options: dict[str, Any] = field(default_factory=dict)
    """librdkafka client settings for every Kafka client (``security.protocol``, SASL ...)."""
    kafka_consumer_options: dict[str, Any] = field(
        default_factory=lambda: {"session.timeout.ms": 10000, "heartbeat.interval.ms": 1000})
    """librdkafka settings of the delay-topic consumer; the default lets a dead timer service's partitions move to
    another within about 10 s (librdkafka's own default is 45 s)."""
    kafka_consume_in_workers: bool = True
    """Run the delay-topic consumer in every Celery worker; False when ``durable timers`` processes do it."""
    kafka_producer: dict[str, Any] | None = field(default=None, repr=False)
    """librdkafka settings of the producer of your own records (``ctx.publish``), over the defaults
    (``acks=all``) and ``kafka_options``."""
    chains: bool = False
    """Start every Celery chain of the app's durable steps (``chain(...).delay()``, ``a.s() | b.s()``) as a durable
    run; what it returns is a Celery ``AsyncResult`` over the run (see :mod:`durable_tasks.celery_chains`)."""

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "worker_timeout", "redelivery_after", "timer_interval",
                     "sweep_interval", "retain_finished_runs", "retain_fired_timers", "retain_attempts",
                     "retention_interval", "max_sleep", "event_retention", "timer_grace"):
            object.__setattr__(self, name, parse_duration(getattr(self, name)))
        for name in ("max_sleep", "event_retention"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be a positive duration, not {getattr(self, name)!r}.")
        if self.event_secret is not None and len(str(self.event_secret).encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"event_secret is {len(str(self.event_secret).encode())} bytes long; use at least "
                f"{MIN_SECRET_BYTES} random bytes, for example secrets.token_urlsafe(32)."
            )
        if self.timer_backend not in ("database", "kafka"):
            raise ConfigurationError(f"timer_backend={self.timer_backend!r}: use 'database' or 'kafka'.")
        if self.timer_backend == "kafka" and not self.kafka_servers:
            raise ConfigurationError("timer_backend='kafka' needs kafka_servers, Kafka's bootstrap servers "
                                     "(Durable(app, kafka_servers='kafka-1:9092') or app.conf.durable_kafka_servers).")
        if isinstance(self.kafka_tiers, str):
            object.__setattr__(self, "kafka_tiers", tuple(parse_duration(tier) for tier in self.kafka_tiers.split(",")))
        if self.worker_timeout <= self.heartbeat_interval:
            raise ConfigurationError(
                f"worker_timeout ({self.worker_timeout}s) must be longer than heartbeat_interval "
                f"({self.heartbeat_interval}s), or live workers would be declared dead."
            )
        object.__setattr__(self, "sqlite_synchronous", check_sqlite_synchronous(self.sqlite_synchronous))
        if self.max_payload_bytes < 1:
            raise ConfigurationError("max_payload_bytes must be a positive number of bytes.")

    @property
    def migrate_automatically(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.store.startswith("sqlite")


def resolve_settings(conf: Any, overrides: dict[str, Any]) -> Settings:
    """Merge explicit arguments over ``conf.durable_*`` over defaults."""
    known = {field.name for field in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigurationError(
            f"Unknown Durable option(s): {', '.join(sorted(unknown))}. Known: {', '.join(sorted(known))}."
        )
    values: dict[str, Any] = {}
    for name in known:
        if overrides.get(name) is not None:
            values[name] = overrides[name]
        else:
            from_conf = conf.get(f"durable_{name}") if conf is not None else None
            if from_conf is not None:
                values[name] = from_conf
    settings = Settings(**values)
    if not settings.store:
        settings = replace(settings, store=default_store_url())
    return settings
