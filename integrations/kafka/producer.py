"""Write timer records to the tier topic that fits the time they have left."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

from .config import KafkaTimerConfig
from .errors import KafkaTimerError
from .records import TimerRecord

DeliveryCallback = Callable[[TimerRecord, Exception | None], None]
"""Called once per record sent: ``(record as written, None)`` when Kafka confirmed it, else ``(record, error)``."""


class KafkaTimerProducer:
    """Sends timers into the delay topics; thread-safe, one per process is enough.

    Delivery callbacks run inside :meth:`send`, :meth:`flush` and :meth:`close`, on the calling thread.

    ::

        producer = KafkaTimerProducer(KafkaTimerConfig("127.0.0.1:9092"))
        producer.send(TimerRecord(timer_id=12, run_id=run_id, due_at=time.time() + 3600), on_delivered)
        producer.flush(10)   # callbacks have run for everything sent before
    """

    def __init__(self, config: KafkaTimerConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._producer = Producer(config.producer_settings())

    def send(self, record: TimerRecord, on_delivered: DeliveryCallback) -> None:
        """Produce to the largest tier whose delay fits the time left (the smallest tier if already due).

        The record is written with ``enqueued_at`` set to now; ``on_delivered`` gets that copy. Raises
        :class:`KafkaTimerError` when the local send queue stays full (Kafka has been out of reach for a while).
        """
        now = self._clock()
        stamped = TimerRecord(record.timer_id, record.run_id, record.due_at, now, record.hops)
        topic = self._config.topic(self._config.tier_for(record.due_at - now))

        def delivered(error: KafkaError | None, _message: Message) -> None:
            on_delivered(stamped, None if error is None else _delivery_error(stamped, topic, error))

        try:
            self._producer.produce(topic, stamped.encode(), stamped.key, on_delivery=delivered)
        except BufferError:
            # The queue is full of records waiting for a broker: serve their callbacks for a moment, then retry once.
            self._producer.poll(1.0)
            try:
                self._producer.produce(topic, stamped.encode(), stamped.key, on_delivery=delivered)
            except BufferError:
                raise KafkaTimerError(
                    f"Cannot queue timer {record.timer_id} of run {record.run_id} for {topic}: the producer's queue "
                    f"is full because Kafka at {self._config.bootstrap_servers} has not confirmed earlier records. "
                    "Check the brokers; the timer stays in the database and is sent again."
                ) from None
        self._producer.poll(0)

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every record sent so far; returns how many are still unconfirmed."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush for up to ``timeout`` seconds, then fail whatever is still queued (its callbacks get an error)."""
        if self._producer.flush(timeout):
            self._producer.purge()
            self._producer.flush(0)


def _delivery_error(record: TimerRecord, topic: str, error: KafkaError) -> KafkaTimerError:
    return KafkaTimerError(
        f"Kafka did not accept timer {record.timer_id} of run {record.run_id} for {topic}: {error.str()}. "
        "The timer stays in the database; check the brokers and the topic (create_topics)."
    )
