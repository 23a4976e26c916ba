"""The consumer side: read the tier topics, fire due timers, forward the others, never fire early.

Each partition of a tier topic is read in append order. The record at its head is either fired (due),
forwarded to the tier that fits its remaining time (its tier's delay has passed), or not ready yet: then the
service seeks back to it and pauses the partition until it is ready, while other partitions keep flowing.
The resume times are the only state kept (one heap entry per paused partition), so memory does not grow with
the number of pending timers.

Offsets are committed only after the ``fire`` callback returned or Kafka confirmed the forwarded record: a
crash replays records (at least once), and firing is idempotent in the core.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from .config import KafkaTimerConfig
from .errors import KafkaTimerError
from .pauses import Partition, PauseSchedule
from .producer import KafkaTimerProducer
from .records import Action, TimerRecord, decide

logger = logging.getLogger("durable_tasks.integrations.kafka")

FireCallback = Callable[[TimerRecord], None]
BatchFireCallback = Callable[[list[TimerRecord]], None]
"""Fires every due record of one poll together (one database transaction instead of one per record)."""
"""Fires one due timer; returns once the core's journaled transition committed, raises if it could not."""


class KafkaTimerService:
    """Consumes the tier topics; several processes share the tiers as one consumer group.

    ``fire`` is called for each due record, on the thread that calls :meth:`poll_once` or :meth:`run`. With
    ``assign=True`` the service reads every partition itself instead of joining the group (tests, or a single
    service that must start without waiting for a group rebalance); offsets are still committed for the group.

    ::

        service = KafkaTimerService(config, fire=lambda record: fire_timer(record.timer_id))
        stop = threading.Event()
        try:
            service.run(stop)          # until another thread sets ``stop``
        finally:
            service.close()
    """

    def __init__(self, config: KafkaTimerConfig, fire: FireCallback, *, clock: Callable[[], float] = time.time,
                 assign: bool = False, fire_batch: BatchFireCallback | None = None) -> None:
        self._config = config
        self._fire = fire
        self._fire_batch = fire_batch
        self._clock = clock
        self._assign = assign
        self._tiers = config.topics()
        self._consumer = Consumer({**config.consumer_settings(), "on_commit": _report_commit})
        self._forwarder = KafkaTimerProducer(config, clock=clock)
        self._pauses = PauseSchedule()
        self._assigned: set[Partition] = set()
        self._to_resume: list[Partition] = []
        self._uncommitted: dict[Partition, int] = {}
        self._committed_at = 0.0
        self._failures = 0
        self._started = False
        self._closed = False

    def poll_once(self, timeout: float = 0.5) -> int:
        """Handle what arrives within ``timeout`` seconds (less when a paused partition is due to resume).

        Returns how many records were fired or forwarded. Raises :class:`KafkaTimerError` when a tier topic is
        missing at start, or Kafka reports a fatal error.
        """
        self._start()
        self._resume(self._pauses.due(self._clock()))
        messages = self._receive(self._wait(timeout))
        self._resume_assigned()
        done = self._process(messages) if messages else 0
        if self._uncommitted and self._clock() - self._committed_at >= self._config.commit_interval:
            self._commit()
        return done

    def run(self, stop: threading.Event, *, timeout: float = 0.5) -> None:
        """Poll until ``stop`` is set (checked every ``timeout`` seconds at most). Does not close the service."""
        while not stop.is_set():
            self.poll_once(timeout)

    def assignment(self) -> list[Partition]:
        """The (topic, partition) pairs this service reads now, sorted."""
        return sorted(self._assigned)

    def paused(self) -> dict[Partition, float]:
        """The partitions waiting for their head record, with the time each resumes."""
        return self._pauses.snapshot()

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for forwarded records, commit, and leave the group."""
        if self._closed:
            return
        self._closed = True
        self._forwarder.close(timeout)
        self._commit()  # consumer.close() waits for it (a synchronous commit could hang on a dead cluster)
        self._consumer.close()

    def _receive(self, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` for one record, then take what else has arrived, up to ``max_batch``."""
        # consume(n, timeout) would wait out the whole timeout unless n records arrive: latency for nothing.
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        rest = self._consumer.consume(self._config.max_batch - 1, 0) if self._config.max_batch > 1 else []
        return [first, *rest]

    def _process(self, messages: list[Message]) -> int:
        batch = _Batch()
        held = batch.held
        for message in messages:
            # Records behind a paused head are read again on resume; a fetch brings many, so skip them cheaply.
            if held and (message.topic(), message.partition()) in held:
                continue
            self._handle(message, batch)
        self._settle_fires(batch)
        self._settle_forwards(batch)
        self._uncommitted.update(batch.offsets)
        return batch.done

    # --- one record ---------------------------------------------------------------------------------------

    def _handle(self, message: Message, batch: _Batch) -> None:
        error = message.error()
        if error is not None:
            _report_consume_error(error)
            return
        partition, offset = _position(message)
        tier = self._tiers[partition[0]]
        try:
            record = TimerRecord.decode(message.value())
        except ValueError as exc:
            logger.error("Skipping offset %d of %s[%d]: %s", offset, *partition, exc)
            batch.advance(partition, offset)
            return
        now = self._clock()
        decision = decide(record, tier, now)
        if decision.action is Action.WAIT:
            self._hold(partition, offset, decision.at, batch)
        elif decision.action is Action.FIRE and self._fire_batch is not None:
            batch.fires.append((record, partition, offset))
            batch.advance(partition, offset)
        elif decision.action is Action.FIRE:
            self._fire_record(record, partition, offset, now, batch)
        else:
            self._forward(record, partition, offset, batch)

    def _fire_record(self, record: TimerRecord, partition: Partition, offset: int, now: float,
                     batch: _Batch) -> None:
        try:
            self._fire(record)
        except Exception:
            # The database is probably down: leave the offset uncommitted and look again later, without spinning.
            delay = self._backoff()
            logger.warning("Firing timer %d of run %s failed; retrying %s[%d] in %.1f s", record.timer_id,
                           record.run_id, *partition, delay, exc_info=self._failures == 1)
            self._hold(partition, offset, now + delay, batch)
            return
        self._failures = 0
        batch.advance(partition, offset)
        batch.done += 1

    def _forward(self, record: TimerRecord, partition: Partition, offset: int, batch: _Batch) -> None:
        forward = _Forward(partition, offset)
        batch.forwards.append(forward)
        try:
            next_hop = TimerRecord(record.timer_id, record.run_id, record.due_at, 0.0, record.hops + 1)
            self._forwarder.send(next_hop, forward.delivered)
        except KafkaTimerError as exc:
            forward.error = exc
        batch.advance(partition, offset)
        batch.done += 1

    def _hold(self, partition: Partition, offset: int, until: float, batch: _Batch) -> None:
        """Seek back to ``offset`` and pause the partition until ``until``."""
        position = TopicPartition(partition[0], partition[1], offset)
        self._consumer.pause([position])
        self._consumer.seek(position)
        self._pauses.hold(partition, until)
        batch.held.add(partition)

    def _backoff(self) -> float:
        self._failures += 1
        return min(self._config.retry_backoff_max, self._config.retry_backoff * 2.0 ** (self._failures - 1))

    # --- one batch ------------------------------------------------------------------------------------------

    def _settle_fires(self, batch: _Batch) -> None:
        """Fire this poll's due records together; if that fails, replay each partition from its first one."""
        if not batch.fires:
            return
        assert self._fire_batch is not None
        try:
            self._fire_batch([record for record, _, _ in batch.fires])
        except Exception:
            delay = self._backoff()
            first: dict[Partition, int] = {}
            for _, partition, offset in batch.fires:
                first.setdefault(partition, offset)
            logger.warning("Firing %d timer(s) failed; retrying %d partition(s) in %.1f s", len(batch.fires),
                           len(first), delay, exc_info=self._failures == 1)
            for partition, offset in first.items():
                batch.offsets[partition] = offset
                self._hold(partition, offset, self._clock() + delay, batch)
            return
        self._failures = 0
        batch.done += len(batch.fires)

    def _settle_forwards(self, batch: _Batch) -> None:
        """Wait for Kafka to confirm this batch's forwards; replay a partition from its first unconfirmed one."""
        if not batch.forwards:
            return
        self._forwarder.flush(self._config.forward_timeout)
        unconfirmed: dict[Partition, _Forward] = {}
        for forward in batch.forwards:
            if not forward.confirmed and forward.partition not in unconfirmed:
                unconfirmed[forward.partition] = forward
        if not unconfirmed:
            self._failures = 0
            return
        delay = self._backoff()
        for partition, forward in unconfirmed.items():
            reason = forward.error or f"not confirmed within {self._config.forward_timeout} s"
            logger.warning("Forwarding from %s[%d] failed (%s); replaying from offset %d in %.1f s",
                           *partition, reason, forward.offset, delay)
            batch.offsets[partition] = forward.offset
            self._hold(partition, forward.offset, self._clock() + delay, batch)

    def _commit(self, partitions: Iterable[Partition] | None = None, *, asynchronous: bool = True) -> None:
        """Commit what was fired or forwarded (in ``partitions``, default all) since the last commit."""
        chosen = list(self._uncommitted) if partitions is None else [p for p in partitions if p in self._uncommitted]
        self._committed_at = self._clock()
        if not chosen:
            return
        positions = [TopicPartition(topic, number, self._uncommitted.pop((topic, number))) for topic, number in chosen]
        try:
            if asynchronous:
                self._consumer.commit(offsets=positions, asynchronous=True)
            else:
                self._consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:  # no coordinator right now: the records are replayed, harmlessly
            logger.warning("Could not commit timer offsets: %s", exc)

    # --- partitions -------------------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        try:
            metadata = self._consumer.list_topics(timeout=self._config.forward_timeout)
        except KafkaException as exc:
            raise KafkaTimerError(f"Cannot reach Kafka at {self._config.bootstrap_servers}: {exc}. Check the "
                                  "brokers and the client settings (KafkaTimerConfig.client).") from exc
        missing = [topic for topic in self._tiers if topic not in metadata.topics or metadata.topics[topic].error]
        if missing:
            raise KafkaTimerError(f"The delay topics {', '.join(missing)} do not exist on "
                                  f"{self._config.bootstrap_servers}: create them with create_topics(config) first.")
        if self._assign:
            partitions = [TopicPartition(topic, number) for topic in self._tiers
                          for number in sorted(metadata.topics[topic].partitions)]
            self._consumer.assign(partitions)
            self._assigned = {(p.topic, p.partition) for p in partitions}
        else:
            self._consumer.subscribe(list(self._tiers), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_lost)
        self._started = True

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(assigned)
        self._pauses.release(assigned)
        # librdkafka keeps an application's pause across a lost-and-regained assignment: undo ours once assigned.
        self._to_resume.extend(assigned)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = [(p.topic, p.partition) for p in partitions]
        self._commit(revoked, asynchronous=False)  # the next owner starts where this one stopped
        self._forget(revoked)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([(p.topic, p.partition) for p in partitions])  # already someone else's: no commit

    def _forget(self, partitions: list[Partition]) -> None:
        self._assigned.difference_update(partitions)
        self._pauses.release(partitions)
        for partition in partitions:
            self._uncommitted.pop(partition, None)

    def _resume_assigned(self) -> None:
        if self._to_resume:
            self._resume(self._to_resume)
            self._to_resume = []

    def _resume(self, partitions: list[Partition]) -> None:
        owned = [TopicPartition(topic, number) for topic, number in partitions if (topic, number) in self._assigned]
        if owned:
            self._consumer.resume(owned)

    def _wait(self, timeout: float) -> float:
        """Block no longer than ``timeout``, nor past the next resume time."""
        next_time = self._pauses.next_time()
        if next_time is None:
            return timeout
        return max(0.0, min(timeout, next_time - self._clock()))


@dataclass(eq=False)
class _Forward:
    """One forwarded record, until Kafka confirms it."""

    partition: Partition
    offset: int
    confirmed: bool = False
    error: Exception | None = None

    def delivered(self, _record: TimerRecord, error: Exception | None) -> None:
        self.confirmed = error is None
        self.error = error


@dataclass
class _Batch:
    """What one poll did: offsets to commit, partitions paused, forwards awaiting confirmation."""

    offsets: dict[Partition, int] = field(default_factory=dict)
    held: set[Partition] = field(default_factory=set)
    forwards: list[_Forward] = field(default_factory=list)
    fires: list[tuple[TimerRecord, Partition, int]] = field(default_factory=list)
    done: int = 0

    def advance(self, partition: Partition, offset: int) -> None:
        self.offsets[partition] = offset + 1


def _position(message: Message) -> tuple[Partition, int]:
    topic, number, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and number is not None and offset is not None  # set on every consumed record
    return (topic, number), offset


def _report_consume_error(error: KafkaError) -> None:
    if error.fatal():
        raise KafkaTimerError(f"Kafka reported a fatal consumer error: {error.str()}. Restart the timer service.")
    # Transport errors (a broker restarting, a topic being recreated) are retried by the client itself.
    logger.warning("Kafka consumer error: %s", error.str())


def _report_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    if error is not None:
        logger.warning("Committing timer offsets failed (%s); those records will be read again", error.str())
