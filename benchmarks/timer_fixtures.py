"""What one measurement of ``benchmarks/timers.py`` sets up and reads back.

:class:`Seeder` writes pending sleeps in bulk (runs, sleep steps, timer rows; with Kafka also their records in
the tier topics), :class:`Service` runs ``python -m durable_tasks timers -A benchmarks.timer_app`` as a process
of its own, and :class:`TableStats` reads the timers table's statistics and, at the end, its fired timers.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, psycopg_dsn

APP = "benchmarks.timer_app"


@dataclass(frozen=True)
class Group:
    """Timers seeded alike: ids ``first`` to ``first + count - 1``, due from ``due_from`` every ``due_step``."""

    first: int
    count: int
    due_from: float
    due_step: float
    in_kafka: bool  # Kafka backend only: handed off, with a record in the tier topics

    @property
    def last(self) -> int:
        return self.first + self.count - 1


@dataclass
class Firing:
    """What the timers table says about the due timers once the service stopped."""

    fired: int = 0
    early: int = 0  # fired_at < due_at: must stay 0
    first: float = 0.0  # first and last fired_at
    last: float = 0.0
    p50: float = 0.0  # lateness, fired_at - due_at, seconds
    p99: float = 0.0
    max: float = 0.0
    tenth_max: list[float] = field(default_factory=list)  # worst lateness in each tenth of the due span
    fired_far: int = 0  # far-future timers that fired: must stay 0

    @property
    def per_s(self) -> float:
        return self.fired / max(self.last - self.first, 1e-9) if self.fired > 1 else 0.0


class Seeder:
    """Writes runs, sleep steps and timer rows in bulk, and (Kafka) their records into the tier topics."""

    def __init__(self, pg: str, schema: str, settings: dict[str, Any], bootstrap: str) -> None:
        import psycopg
        from celery import Celery

        from durable_tasks import Durable

        durable = Durable(Celery("timer-bench-seeder"), **settings)  # the schema, as `durable db upgrade` makes it
        try:
            durable.upgrade_database()
        finally:
            durable.close()
        self.schema = schema
        self.application = f"{schema}-seeder"
        self.kafka = None
        if settings["timer_backend"] == "kafka":
            from durable_tasks.config import Settings
            from durable_tasks.integrations.kafka import create_topics
            from durable_tasks.integrations.kafka.backend import config_from_settings

            self.kafka = config_from_settings(Settings(**settings))
            create_topics(self.kafka, timeout=30)
        self.conn = psycopg.connect(psycopg_dsn(pg), autocommit=True, application_name=self.application)
        self.rng = random.Random(12)

    def seed(self, group: Group) -> None:
        now = time.time()
        handed = now if group.in_kafka and self.kafka is not None else None
        params = {"first": group.first, "last": group.last, "base": group.due_from, "step": group.due_step,
                  "now": now, "handed": handed}
        series = ("SELECT g, %(base)s::float8 + (g - %(first)s::bigint) * %(step)s::float8 AS due "
                  "FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g")
        table = f'"{self.schema}".durable_'
        with self.conn.transaction():
            self.conn.execute(
                f"INSERT INTO {table}runs (id, workflow, status, input, fingerprint, created_at, updated_at, label) "
                "SELECT 'tb-' || g, 'bench.nap', 'sleeping', '[]', 'timer-bench', %(now)s::float8, "
                f"%(now)s::float8, 'bench.nap' FROM ({series}) AS t", params)
            self.conn.execute(
                f"INSERT INTO {table}steps (run_id, position, step_key, kind, name, status, attempt, request, "
                "created_at) SELECT 'tb-' || g, 0, 'nap', 'sleep', 'nap', 'sleeping', 1, "
                "json_build_object('seconds', greatest(due - %(now)s::float8, 0), 'until', due)::text, "
                f"%(now)s::float8 FROM ({series}) AS t", params)
            self.conn.execute(
                f"INSERT INTO {table}timers (id, run_id, position, purpose, due_at, handed_off_at) "
                f"SELECT g, 'tb-' || g, 0, 'sleep', due, %(handed)s::float8 FROM ({series}) AS t", params)
        if handed is not None:
            rows = self.conn.execute(f"SELECT id, run_id, due_at FROM {table}timers WHERE id BETWEEN %s AND %s",
                                     (group.first, group.last)).fetchall()
            self.produce(rows)

    def produce(self, rows: list[tuple[int, str, float]]) -> None:
        """Each record in the tier it would be in, as if it entered that tier some time in the last tier delay
        (what a service sees in steady state), in append order (the order they became ready)."""
        from confluent_kafka import Producer

        from durable_tasks.integrations.kafka import TimerRecord

        assert self.kafka is not None
        now = time.time()
        records = []
        for timer_id, run_id, due in rows:
            tier = self.kafka.tier_for(due - now)
            enqueued = now - self.rng.random() * tier
            records.append((enqueued, tier, TimerRecord(timer_id, run_id, due, enqueued)))
        records.sort(key=lambda item: item[0])
        producer = Producer({**self.kafka.producer_settings(), "linger.ms": 50, "batch.num.messages": 10_000,
                             "queue.buffering.max.messages": 500_000})
        for _, tier, record in records:
            while True:
                try:
                    producer.produce(self.kafka.topic(tier), record.encode(), record.key)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        if producer.flush(120):
            raise RuntimeError("Kafka did not confirm every seeded timer record within 120 s")

    def analyze(self) -> None:
        """Statistics as autovacuum would have them after a bulk load, and the id sequence past the seeded ids."""
        table = f'"{self.schema}".durable_'
        self.conn.execute(f"ANALYZE {table}runs, {table}steps, {table}timers")
        self.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}timers', 'id'), "
                          f"(SELECT coalesce(max(id), 0) + 1 FROM {table}timers))")

    def close(self) -> None:
        self.conn.close()


class TableStats:
    """Reads the timers table's statistics, and at the end its fired timers, on a connection of its own."""

    def __init__(self, pg: str, schema: str) -> None:
        import psycopg

        self.schema = schema
        self.conn = psycopg.connect(psycopg_dsn(pg), autocommit=True)

    def rows_read(self) -> int:
        """Rows of the timers table read so far by every backend: sequential scans plus index fetches."""
        row = self.conn.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables "
            "WHERE schemaname = %s AND relname = 'durable_timers'", (self.schema,)).fetchone()
        return int(row[0]) if row else 0

    def wait_disconnected(self, application: str, timeout: float = 15.0) -> None:
        """Until no backend of connections named ``application`` is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                    (application,)).fetchone()
            if row is None or row[0] == 0:
                return
            time.sleep(0.05)
        raise TimeoutError(f"database connections named {application!r} were still open after {timeout:.0f} s")

    def firing(self, due: Group) -> Firing:
        """The due timers' ``fired_at - due_at``, and far-future timers (lower ids) that fired."""
        table = f'"{self.schema}".durable_timers'
        row = self.conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE fired_at < due_at), min(fired_at), max(fired_at), "
            "percentile_disc(0.5) WITHIN GROUP (ORDER BY fired_at - due_at), "
            "percentile_disc(0.99) WITHIN GROUP (ORDER BY fired_at - due_at), max(fired_at - due_at) "
            f"FROM {table} WHERE fired_at IS NOT NULL AND id BETWEEN %s AND %s", (due.first, due.last)).fetchone()
        assert row is not None
        tenths = self.conn.execute(
            f"SELECT (id - %s) * 10 / %s AS tenth, max(fired_at - due_at) FROM {table} "
            "WHERE fired_at IS NOT NULL AND id BETWEEN %s AND %s GROUP BY tenth ORDER BY tenth",
            (due.first, due.count, due.first, due.last)).fetchall()
        far = self.conn.execute(f"SELECT count(*) FROM {table} WHERE fired_at IS NOT NULL AND id < %s",
                                (due.first,)).fetchone()
        return Firing(row[0], row[1], row[2] or 0.0, row[3] or 0.0, row[4] or 0.0, row[5] or 0.0, row[6] or 0.0,
                      [late for _, late in tenths], far[0] if far else 0)

    def close(self) -> None:
        self.conn.close()


@dataclass
class Service:
    """``python -m durable_tasks timers -A benchmarks.timer_app`` in a process group of its own."""

    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] = field(init=False)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "durable_tasks", "timers", "-A", APP],
                                            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        self.started = time.time()
        deadline = time.monotonic() + 60
        while "running on" not in self.log.read_text(errors="replace"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the timer service did not start within 60 s; see {self.log}")
            time.sleep(0.05)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the timer service exited with status {self.process.returncode}:\n{tail}")

    def rss_mb(self, field_name: str) -> float:
        """``VmRSS`` (now) or ``VmHWM`` (peak so far) of the service, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        """User plus system CPU seconds the service used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, *, kill: bool = False) -> float:
        """SIGTERM (then SIGKILL), or SIGKILL at once, the service's group; returns the seconds it ran."""
        if self.process.poll() is None:
            signals = ((signal.SIGKILL, 10),) if kill else ((signal.SIGTERM, 30), (signal.SIGKILL, 10))
            for sig, wait in signals:
                try:
                    os.killpg(self.process.pid, sig)
                    self.process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        return time.time() - self.started

    def reconciled(self) -> int:
        """Timers the Kafka backend's reconciler fired from the database (it logs each batch)."""
        text = self.log.read_text(errors="replace")
        return sum(int(count) for count in re.findall(r"Reconciler fired (\d+) timer", text))


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the benchmark dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
