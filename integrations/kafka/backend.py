"""The Kafka timer backend: durable timers travel through delay topics, the database stays the truth.

``Durable(app, timer_backend="kafka", kafka_servers="kafka-1:9092")`` replaces the polling backend with
:class:`KafkaTimers`:

- **hand-off**: a timer written within ``window`` (the largest tier) of its due time gets an outbox row of
  kind ``timer`` in the transaction that writes it, and is produced after commit; the row is deleted once
  Kafka confirms the record (until then the relay produces it again). A timer due later stays in SQL; the
  hand-off poll gives it to Kafka when it comes within the window (a partial index reads only those rows);
- **firing**: a consumer (``KafkaTimerService``, one consumer group for every process that runs it) calls
  :func:`durable_tasks.transitions.fire_timer` when a record is due; firing is idempotent (``fired_at IS
  NULL``), so at-least-once delivery is harmless;
- **reconciler**: any timer overdue by more than ``grace`` is fired from the database, whatever Kafka did
  (a lost record, a lost broker, every timer service down), and logged with how late it was (I3).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from durable_tasks import transitions
from durable_tasks.logs import RateLimitedLog
from durable_tasks.messages import TimerMessage
from durable_tasks.runtime import Runtime
from durable_tasks.store import queries
from durable_tasks.timers import DatabaseTimers

from .config import DEFAULT_TIERS, KafkaTimerConfig
from .producer import KafkaTimerProducer
from .records import TimerRecord
from .service import KafkaTimerService

logger = logging.getLogger("durable_tasks.integrations.kafka.backend")


def config_from_settings(settings: Any) -> KafkaTimerConfig:
    """The transport's configuration from ``Durable`` settings (``kafka_servers``, ``kafka_tiers`` ...)."""
    tiers = tuple(float(tier) for tier in settings.kafka_tiers) if settings.kafka_tiers else DEFAULT_TIERS
    return KafkaTimerConfig(settings.kafka_servers, tiers=tiers, topic_prefix=settings.kafka_topic_prefix,
                            group_id=settings.kafka_group_id, partitions=settings.kafka_partitions,
                            client=dict(settings.kafka_options), consumer=dict(settings.kafka_consumer_options))


class KafkaTimers:
    """A :class:`~durable_tasks.timers.TimerBackend` that carries timers through Kafka delay topics.

    ``fire_due`` (called by each worker's services every ``timer_interval``, or by ``durable timers``) serves
    Kafka's delivery confirmations, hands off timers that come near, and reconciles overdue ones; ``start``
    runs the consumer on a thread of its own until ``stop``.
    """

    def __init__(self, runtime: Runtime, config: KafkaTimerConfig, *, grace: float, batch: int = 200) -> None:
        self.runtime = runtime
        self.config = config
        self.grace = grace
        self.batch = batch
        self.window = config.tiers[-1]
        runtime.timer_window = self.window
        self._reconciler = DatabaseTimers(runtime, batch=batch)
        self._producer: KafkaTimerProducer | None = None
        self._producer_pid = 0
        self._confirmed: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer: threading.Thread | None = None
        self._failures = RateLimitedLog(logger, every=60.0)

    # --- the publisher's side: produce after commit, remember what Kafka confirmed ---------------------------

    def send(self, message: TimerMessage) -> None:
        """Produce the timer's record; its outbox row is deleted once Kafka confirms it."""
        if self._producer is None or self._producer_pid != os.getpid():  # librdkafka's threads do not survive a fork
            self._producer = KafkaTimerProducer(self.config)
            self._producer_pid = os.getpid()

        def delivered(_record: TimerRecord, error: Exception | None) -> None:
            if error is None and message.outbox_id is not None:
                with self._lock:
                    self._confirmed.append(message.outbox_id)

        self._producer.send(TimerRecord(message.timer_id, message.run_id, message.due_at), delivered)

    # --- the worker services' duty ---------------------------------------------------------------------------

    def fire_due(self) -> int:
        """Settle confirmations, hand off timers coming near, fire timers overdue by more than ``grace``."""
        self._settle_confirmed()
        self._hand_off()
        return self.reconcile()

    def _settle_confirmed(self) -> None:
        if self._producer is not None:
            self._producer.flush(0)  # runs the delivery callbacks of everything Kafka answered meanwhile
        with self._lock:
            confirmed, self._confirmed = self._confirmed, []
        if confirmed:
            with self.runtime.store.begin() as conn:
                queries.delete_outboxes(conn, confirmed)

    def _hand_off(self) -> None:
        deadline = time.monotonic() + self._reconciler.budget
        while True:
            with self.runtime.unit_of_work() as uow:
                coming = queries.timers_to_hand_off(uow.conn, time.time() + self.window, self.batch)
                transitions.hand_off_timers(uow, coming)
            if len(coming) < self.batch or time.monotonic() > deadline:
                return

    def reconcile(self) -> int:
        """Fire from the database every timer overdue by more than ``grace``; returns how many fired."""
        now = time.time()
        fired = self._reconciler.fire_overdue(now - self.grace)
        if fired:
            logger.warning("Reconciler fired %d timer(s) Kafka did not deliver in time, up to %.1fs late.",
                           len(fired), max(now - timer.due_at for timer in fired))
        return len(fired)

    # --- the consumer ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the delay-topic consumer on a thread of its own (this process joins the consumer group)."""
        if self._consumer is not None:
            return
        self._stop.clear()
        self._consumer = threading.Thread(target=self._consume, name="durable-kafka-timers", daemon=True)
        self._consumer.start()

    def _consume(self) -> None:
        service = KafkaTimerService(self.config, self.fire_record, fire_batch=self.fire_records)
        try:
            while not self._stop.is_set():
                try:
                    service.run(self._stop)
                except Exception:  # a fatal Kafka error, a missing topic: say so, try again
                    self._failures.exception("consumer", "Kafka timer consumer failed; retrying in 5s.")
                    self._stop.wait(5.0)
        finally:
            service.close()

    def fire_record(self, record: TimerRecord) -> None:
        """Fire the timer a due record names; a timer already fired or gone (a pruned run) is done."""
        self.fire_records([record])

    def fire_records(self, records: list[TimerRecord]) -> None:
        """Fire the timers of one poll's due records in one transaction, their runs locked in ``run_id`` order
        (so two services never wait on each other in opposite orders)."""
        with self.runtime.unit_of_work() as uow:
            for record in sorted(records, key=lambda record: (record.run_id, record.timer_id)):
                timer = queries.get_timer(uow.conn, record.timer_id)
                if timer is not None:
                    transitions.fire_timer(uow, timer)

    def stop(self) -> None:
        """Stop the consumer and flush what the producer still holds."""
        self._stop.set()
        if self._consumer is not None:
            self._consumer.join(timeout=15)
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(5.0)
            self._settle_confirmed()
            self._producer.close()
            self._producer = None
