"""The Prometheus endpoint of a real worker (``metrics_port``) and of ``durable metrics serve``, scraped
during and after a run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import ROOT, Stack

pytestmark = pytest.mark.integration

BROKER = os.environ.get("DT_TEST_FLOWER_REDIS", "redis://127.0.0.1:6379/14")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int, timeout: float = 20) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the endpoint, by name and labels (waits for the endpoint to answer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def metered(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, int]]:
    port = _free_port()
    stack = Stack("postgresql", tmp_path_factory.mktemp("metrics"), broker=BROKER, metrics_port=port)
    try:
        stack.start_worker()
        yield stack, port
    finally:
        stack.close()


def test_the_workers_endpoint_counts_a_run_while_it_sleeps_and_after(metered: tuple[Stack, int]) -> None:
    stack, port = metered
    run = stack.client.workflows["nap"].start(0.2, 2.0)
    stack.wait_until(lambda: stack.durable.run(run.id).status == "sleeping", 20, "the run to sleep")

    during = scrape(port)
    assert value(during, "durable_runs", workflow="wf.nap", status="sleeping") == 1
    assert value(during, "durable_timers_pending") >= 1
    assert value(during, "durable_step_attempts_total", step="t.slow", kind="task", outcome="succeeded") == 1
    assert value(during, "durable_run_transitions_total", workflow="wf.nap", status="sleeping") == 1
    assert value(during, "durable_workers_live") >= 1 and value(during, "durable_journal_up") == 1

    assert run.result(timeout=30) == ["first", "second"]
    after = scrape(port)
    assert value(after, "durable_runs", workflow="wf.nap", status="succeeded") == 1
    assert value(after, "durable_runs", workflow="wf.nap", status="sleeping") is None
    assert value(after, "durable_step_attempts_total", step="t.slow", kind="task", outcome="succeeded") == 2
    assert value(after, "durable_step_duration_seconds_count", step="t.slow", kind="task", outcome="succeeded") == 2
    assert value(after, "durable_timer_lateness_seconds_count", purpose="sleep") == 1
    assert value(after, "durable_outbox_messages", kind="advance") == 0
    assert not any(name.startswith("flower_") for name, _ in after)


def test_durable_metrics_serve_reads_the_journal(metered: tuple[Stack, int], tmp_path: Any) -> None:
    stack, _ = metered
    stack.set_flag("broken-metrics")
    run = stack.client.workflows["fixable"].start("metrics")
    port = _free_port()
    command = [sys.executable, "-m", "durable_tasks", "metrics", "serve", "--port", str(port),
               "--store", stack.store, "--schema", stack.schema or ""]
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=stack.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        stack.wait_until(lambda: stack.durable.run(run.id).status == "failed", 30, "the run to be parked")
        samples = scrape(port)
        assert value(samples, "durable_runs", workflow="wf.nap", status="succeeded") == 1
        assert value(samples, "durable_runs", workflow="wf.fixable", status="failed") == 1
        assert value(samples, "durable_runs_parked") == 1
        assert value(samples, "durable_step_attempts_total", step="t.slow", kind="task", outcome="succeeded") is None, \
            "counters live in the workers; this endpoint serves the journal"
    finally:
        server.terminate()
        server.wait(timeout=10)
