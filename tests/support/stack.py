"""A private slice of the real services for a test or a session: a store, a broker prefix, workers.

PostgreSQL stacks get their own schema (dropped at the end); SQLite stacks their own file. The brokers are
shared, but every stack has its own slice: a key prefix on Redis, a virtual host on RabbitMQ (``broker=RABBITMQ``,
deleted at the end), so stacks never see each other's messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis
import sqlalchemy

from durable_tasks.store import health_queries, queries

from . import rabbitmq
from .app import TestApp, build

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("DT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DT_TEST_REDIS", "redis://127.0.0.1:6379/11")
RABBITMQ_URL = os.environ.get("DT_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
RABBITMQ = "rabbitmq"
"""``Stack(broker=RABBITMQ)``: RabbitMQ, in a virtual host of the stack's own."""
EVENT_SECRET = "integration-tests-event-secret"


class Stack:
    """Store + broker prefix + worker subprocesses for one kind of store ("sqlite" or "postgresql")."""

    def __init__(self, kind: str, directory: Path, *, broker: str = REDIS_URL,
                 cron: list[dict[str, Any]] | None = None, **options: Any) -> None:
        self.kind = kind
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.tag = uuid.uuid4().hex[:10]
        self.vhost: str | None = None
        if broker == RABBITMQ:
            self.vhost = f"dt-{self.tag}"
            rabbitmq.add_vhost(self.vhost)
            broker = RABBITMQ_URL.rstrip("/") + "/" + self.vhost
        self.broker = broker
        self.schema: str | None = None
        if kind == "postgresql":
            self.store = POSTGRES_URL
            self.schema = f"dt_{self.tag}"
        else:
            self.store = f"sqlite:///{directory / 'journal.sqlite3'}"
        self.prefix = f"dt-{self.tag}:"
        self.executions = directory / "executions.jsonl"
        self.executions.touch()
        self.flags = directory / "flags"
        self.flags.mkdir(exist_ok=True)
        self.options = {"worker_timeout": 3, "heartbeat_interval": 0.5, "sweep_interval": 0.5,
                        "redelivery_after": 5, "event_secret": EVENT_SECRET, **options}
        self.env = {
            **os.environ, "DT_STORE": self.store, "DT_SCHEMA": self.schema or "", "DT_BROKER": broker,
            "DT_EXECUTIONS": str(self.executions), "DT_FLAGS": str(self.flags),
            "DT_OPTIONS": json.dumps(self.options), "DT_PREFIX": self.prefix, "PYTHONPATH": str(ROOT),
            "DT_CRON": json.dumps(cron or []),
        }
        self.client: TestApp = build(store=self.store, broker=broker, executions=str(self.executions),
                                     flags=str(self.flags), schema=self.schema, options=self.options,
                                     prefix=self.prefix, cron=cron)
        self.durable = self.client.durable
        self.durable.store.ensure_ready()
        self.workers: list[subprocess.Popen[bytes]] = []

    # --- workers -------------------------------------------------------------------------------------

    def start_worker(self, *, pool: str = "solo", concurrency: int = 1, queues: str = "celery,other",
                     name: str | None = None, wait: bool = True, extra: tuple[str, ...] = (),
                     app: str = "tests.support.worker") -> subprocess.Popen[bytes]:
        name = name or f"w{len(self.workers)}"
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        # On RabbitMQ the worker heartbeat's timer is what wakes the event loop to notice a warm shutdown: without
        # it, stopping a worker there takes about 10 s.
        beat = () if self.vhost is not None else ("--without-heartbeat",)
        command = [sys.executable, "-m", "celery", "-A", app, "worker", f"--pool={pool}",
                   f"--concurrency={concurrency}", "-Q", queues, "-n", f"{name}-{self.tag}@%h",
                   "--loglevel=INFO", "--without-mingle", "--without-gossip", *beat, *extra]
        process = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(process)
        if wait:
            self.wait_for_worker(process)
        return process

    def wait_for_worker(self, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """Until the worker's services wrote their first heartbeat (its consumer starts right after)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}; see {self.directory}")
            with self.durable.store.read() as conn:
                if any(row.pid == process.pid for row in health_queries.list_workers(conn)):
                    time.sleep(0.3)
                    return
            time.sleep(0.1)
        raise TimeoutError(f"worker {process.pid} did not start within {timeout}s; see {self.directory}")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """``kill -9`` a worker process and everything it forked."""
        if process.poll() is None:
            for child in _children(process.pid):
                _signal(child, signal.SIGKILL)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(process)

    # --- observation ---------------------------------------------------------------------------------

    def executions_of(self, run_id: str | None = None) -> list[dict[str, Any]]:
        lines = self.executions.read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        return [row for row in rows if run_id is None or row["run"] == run_id]

    def execution_counts(self, run_id: str) -> Counter[str]:
        return Counter(row["step"] for row in self.executions_of(run_id))

    def set_flag(self, name: str, on: bool = True) -> None:
        path = self.flags / name
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def wait_until(self, predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def step(self, run_id: str, step_key: str) -> Any:
        return next((step for step in self.durable.steps(run_id) if step.step_key == step_key), None)

    def outbox(self, run_id: str | None = None) -> list[Any]:
        with self.durable.store.read() as conn:
            return queries.pending_outbox(conn, run_id)

    def flush_broker(self) -> int:
        """Lose every message the broker holds for this stack (what a Redis restart does); on RabbitMQ, purge the
        stack's queues (messages a worker has taken and not acknowledged yet stay with it)."""
        if self.vhost is not None:
            return rabbitmq.purge(self.broker, ("celery", "other"))
        client = redis.Redis.from_url(self.broker)
        keys = list(client.scan_iter(f"{self.prefix}*"))
        if keys:
            client.delete(*keys)
        return len(keys)

    def close(self) -> None:
        for process in self.workers:
            self.stop(process)
        self.flush_broker()
        self.durable.close()
        if self.vhost is not None:
            rabbitmq.delete_vhost(self.vhost)
        if self.schema:
            engine = sqlalchemy.create_engine(POSTGRES_URL)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            engine.dispose()


def _children(pid: int) -> list[int]:
    try:
        output = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return []
    return [int(value) for value in output.split()]


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
