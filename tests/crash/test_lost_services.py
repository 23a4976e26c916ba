"""The broker loses every message, PostgreSQL restarts: runs still finish, from the database (I3)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.crash.helpers import assert_journal_never_re_executed
from tests.support.stack import RABBITMQ, REDIS_URL, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("broker", [REDIS_URL, RABBITMQ], ids=["redis", "rabbitmq"])
def test_broker_flushed_mid_flight_every_run_still_finishes(tmp_path: Path, broker: str) -> None:
    """50 runs; the broker's data is wiped while they run (what a Redis restart without persistence does; on
    RabbitMQ a purge of the queues, which drops every message not yet delivered to a worker).

    The outbox keeps every unconsumed message, so the relay re-publishes after ``redelivery_after``
    (5 s here), and the sweeper re-dispatches steps whose worker lost them.
    """
    stack = Stack("postgresql", tmp_path, broker=broker)
    try:
        stack.start_worker(pool="prefork", concurrency=2)
        t = stack.client.tasks
        handles = [stack.durable.chain(t["mark"].s("one"), t["slow"].s(0.2, "two"), t["mark"].s("three"),
                                       t["mark"].s("four"), t["mark"].s("five")).start(i) for i in range(50)]
        time.sleep(1.0)
        lost = stack.flush_broker()
        assert lost > 0, "the flush hit queued messages"
        assert [handle.result(timeout=120) for handle in handles] == list(range(50))
        assert_journal_never_re_executed(stack, [handle.id for handle in handles])
        assert not stack.outbox(), "every message was eventually consumed"
    finally:
        stack.close()


def _postgres_restart() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                   timeout=120)


def test_postgresql_restart_mid_run_workers_reconnect(tmp_path: Path) -> None:
    stack = Stack("postgresql", tmp_path, worker_timeout=10)
    try:
        stack.start_worker(pool="prefork", concurrency=2)
        t = stack.client.tasks
        handles = [stack.durable.chain(t["mark"].s("one"), t["slow"].s(0.5, "two"), t["mark"].s("three"),
                                       t["slow"].s(0.5, "four"), t["mark"].s("five")).start(i) for i in range(20)]
        time.sleep(1.0)
        _postgres_restart()
        assert [handle.result(timeout=120) for handle in handles] == list(range(20))
        assert_journal_never_re_executed(stack, [handle.id for handle in handles])
    finally:
        stack.close()
