"""The user's own messages through the outbox: built, journaled with the change that sends them, sent after commit.

A workflow sends with ``ctx.send_task`` / ``ctx.publish`` (a ``message`` step journals it); a task or inline step
with ``current_step().send_task`` / ``.publish``, which buffer the message in an :class:`OutgoingBuffer` until
the step's result commits, in the same transaction. Either way the message is an outbox row of kind
``task_message`` or ``topic_message``, sent right after that commit. Nothing durable-side consumes such a
message, so its row ends when the broker or Kafka confirms it (:func:`send_own`); a row still there after
``redelivery_after`` was never confirmed, and the relay sends it again with the same id.

Celery task messages go through the runtime's publisher; Kafka records through a :class:`TopicProducer`, the
small protocol ``durable_tasks.integrations.kafka.KafkaMessageProducer`` implements (the core imports no Kafka
code).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ConfigurationError
from .logs import RateLimitedLog
from .messages import OwnMessage, TaskMessage, TopicMessage
from .serialization import dumps
from .store import queries
from .store.database import Store
from .workflow import task_request

if TYPE_CHECKING:
    from .outbox import Publisher

logger = logging.getLogger("durable_tasks.outgoing")
_failures = RateLimitedLog(logger, every=30.0)

Confirmation = Callable[[TopicMessage, BaseException | None], None]
"""Called once per record: ``(message, None)`` when Kafka confirmed it, ``(message, error)`` when it failed."""

REFUSED_OPTIONS = {
    "task_id": "durable-tasks sets it: the message's stable id (run:step or run:step:n)",
    "link": "send the callback as a message of its own, or run it as a step",
    "link_error": "send the callback as a message of its own, or run it as a step",
}


class TopicProducer(Protocol):
    """Sends the user's Kafka records (``ctx.publish``); see ``durable_tasks.integrations.kafka``."""

    def produce(self, message: TopicMessage, on_confirmed: Confirmation) -> None:
        """Queue ``message`` for its topic; ``on_confirmed`` runs once Kafka confirms it or refuses it (maybe on
        another thread). May raise when the record cannot even be queued."""
        ...

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for queued records, then stop."""
        ...


TopicSource = Callable[[], "TopicProducer | None"]
"""Where a unit of work finds the Kafka producer, created on first use (None: Kafka is not configured)."""

KAFKA_HINT = ('set the kafka_servers setting (Durable(app, kafka_servers="kafka-1:9092") or '
              'app.conf.durable_kafka_servers) and pip install "durable-tasks[kafka]"')


def task_message(run_id: str, message_id: str, name: str, args: list[Any], kwargs: dict[str, Any],
                 options: dict[str, Any], *, max_bytes: int) -> tuple[TaskMessage, str]:
    """A checked Celery task message of the user's own and its encoded outbox payload.

    ``name``, ``args``, ``kwargs`` and ``options`` are a task call as :func:`~durable_tasks.workflow.task_request`
    resolves it. Raises :class:`~durable_tasks.PayloadError` for arguments that cannot be journaled and
    :class:`~durable_tasks.ConfigurationError` for options it cannot keep.
    """
    options = {key: value for key, value in options.items() if key != "step_key"}
    for option, advice in REFUSED_OPTIONS.items():
        if options.get(option):
            raise ConfigurationError(f"send_task({name!r}) sets {option!r}, which a message sent through the outbox "
                                     f"cannot keep: {advice}.")
    message = TaskMessage(message_id, run_id, name, args, kwargs, options)
    return message, dumps(message.to_payload(), what=f"message {message_id} ({name})", max_bytes=max_bytes)


def topic_message(run_id: str, message_id: str, topic: str, value: Any, key: str | bytes | None, *,
                  max_bytes: int) -> tuple[TopicMessage, str]:
    """A checked Kafka record of the user's own and its encoded outbox payload."""
    if not isinstance(topic, str) or not topic:
        raise ConfigurationError(f"publish() takes a topic name, not {topic!r}.")
    if key is not None and not isinstance(key, str | bytes):
        raise ConfigurationError(f"publish({topic!r}, ...) takes a key of str or bytes, not {type(key).__name__}.")
    message = TopicMessage(message_id, run_id, topic, value, key)
    return message, dumps(message.to_payload(), what=f"message {message_id} (topic {topic})", max_bytes=max_bytes)


class OutgoingBuffer:
    """The messages one attempt of a step sends; they commit with its result, or never leave.

    ``current_step().send_task`` and ``.publish`` append here; ids are ``run:step:n``, counted per attempt, so
    the n-th message of a retried step has the id its failed attempt would have had.
    """

    def __init__(self, run_id: str, step_key: str, *, max_bytes: int, topics: TopicSource | None = None,
                 kafka: bool | None = None) -> None:
        self.run_id = run_id
        self.step_key = step_key
        self.max_bytes = max_bytes
        self.topics = topics
        self.kafka = kafka  # True: publish() is accepted without a producer (the eager test runner)
        self.messages: list[tuple[OwnMessage, str]] = []

    def _next_id(self) -> str:
        return f"{self.run_id}:{self.step_key}:{len(self.messages) + 1}"

    def send_task(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        name, call_args, call_kwargs, options = task_request(task, args, kwargs)
        message, payload = task_message(self.run_id, self._next_id(), name, call_args, call_kwargs, options,
                                        max_bytes=self.max_bytes)
        self.messages.append((message, payload))
        return message.id

    def publish(self, topic: str, value: Any, key: str | bytes | None) -> str:
        if not self.kafka and (self.topics is None or self.topics() is None):
            raise ConfigurationError(f"publish({topic!r}, ...) in step {self.step_key!r} of run {self.run_id} needs "
                                     f"Kafka: {KAFKA_HINT}.")
        message, payload = topic_message(self.run_id, self._next_id(), topic, value, key, max_bytes=self.max_bytes)
        self.messages.append((message, payload))
        return message.id


def send_own(store: Store, publisher: Publisher, topics: TopicSource | None, messages: Iterable[OwnMessage]) -> int:
    """Send committed messages of the user's own; each outbox row ends when its broker confirms it.

    A Celery message counts as confirmed when ``send_task`` returns (Redis answers each push; on RabbitMQ set
    ``broker_transport_options={"confirm_publish": True}`` so that it waits for the broker's ack). A Kafka
    record is confirmed by its delivery report. Failures are logged, never raised: the row stays and the
    relay sends it again. Returns how many were handed over.
    """
    confirmed: list[int] = []
    handed = 0
    for message in messages:
        if isinstance(message, TaskMessage):
            try:
                publisher.publish(message)
            except Exception:
                _failures.exception("task", "Could not send message %s (task %s) of run %s; it stays in the outbox "
                                    "and the relay sends it again.", message.id, message.task, message.run_id,
                                    level=logging.WARNING)
                continue
            handed += 1
            if message.outbox_id is not None:
                confirmed.append(message.outbox_id)
        else:
            handed += _produce(store, topics, message)
    if confirmed:
        end_rows(store, confirmed)
    return handed


def _produce(store: Store, topics: TopicSource | None, message: TopicMessage) -> int:
    producer = topics() if topics is not None else None
    if producer is None:
        _failures.message("kafka", "Cannot send Kafka message %s of run %s to topic %s: this process has no Kafka "
                        "producer; %s. It stays in the outbox.", message.id, message.run_id, message.topic, KAFKA_HINT)
        return 0

    def on_confirmed(sent: TopicMessage, error: BaseException | None) -> None:
        if error is not None:
            _failures.message("kafka", "Kafka did not confirm message %s of run %s to topic %s (%s); it stays in "
                            "the outbox and the relay sends it again.", sent.id, sent.run_id, sent.topic, error)
        elif sent.outbox_id is not None:
            end_rows(store, [sent.outbox_id])

    try:
        producer.produce(message, on_confirmed)
    except Exception:
        _failures.exception("kafka", "Could not queue Kafka message %s of run %s for topic %s; it stays in the "
                            "outbox.", message.id, message.run_id, message.topic, level=logging.WARNING)
        return 0
    return 1


def end_rows(store: Store, outbox_ids: Sequence[int]) -> None:
    """Delete the outbox rows of confirmed messages (an advisory write: losing it only sends a duplicate)."""
    try:
        with store.autocommit() as conn:
            queries.end_outbox(conn, outbox_ids)
    except Exception:
        _failures.exception("end", "Could not remove %d confirmed message(s) from the outbox; the relay will send "
                            "them again (consumers drop the duplicates by id).", len(outbox_ids),
                            level=logging.WARNING)


class LazyTopics:
    """The process's Kafka producer for the user's records, created on first use from the settings.

    ``producer`` may be set directly (tests, or a producer configured in code). A process that forks (prefork
    pool children) gets a producer of its own: librdkafka's threads do not survive a fork.
    """

    def __init__(self, servers: str | None, options: dict[str, Any] | None = None) -> None:
        self.servers = servers
        self.options = dict(options or {})
        self.producer: TopicProducer | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def __call__(self) -> TopicProducer | None:
        if self.producer is not None and (self._pid is None or self._pid == os.getpid()):
            return self.producer
        if not self.servers:
            return self.producer
        with self._lock:
            if self.producer is None or self._pid != os.getpid():
                try:
                    from .integrations.kafka.messages import KafkaMessageProducer
                except ImportError as exc:
                    raise ConfigurationError(f"Kafka messages need confluent-kafka ({exc}); "
                                             'pip install "durable-tasks[kafka]"') from exc
                self.producer = KafkaMessageProducer(self.servers, self.options)
                self._pid = os.getpid()
        return self.producer

    def close(self, timeout: float = 10.0) -> None:
        if self.producer is not None:
            self.producer.close(timeout)
            self.producer = None
