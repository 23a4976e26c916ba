"""Durable runs in a real Flower: one Flower process and one ``-E`` worker on the same Redis broker.

Flower is started once for the module, on Redis database 14, with its API open on the loopback
(``FLOWER_UNAUTHENTICATED_API=true``). The tests poll ``/api/tasks`` and ``/api/task/info/<id>`` through
each phase of a run and read the run's task as Flower shows it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import ROOT, Stack

pytestmark = pytest.mark.integration

FLOWER_BROKER = os.environ.get("DT_TEST_FLOWER_REDIS", "redis://127.0.0.1:6379/14")


class Flower:
    """A Flower process and its HTTP API."""

    def __init__(self, stack: Stack, directory: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
        command = [sys.executable, "-m", "celery", "-A", "tests.support.worker", "flower", f"--port={self.port}",
                   "--address=127.0.0.1", "--broker_api="]
        self.log = open(directory / "flower.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.directory = directory
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flower exited with {self.process.returncode}; see {directory}/flower.log")
            try:
                self.get("/api/tasks")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise TimeoutError(f"flower did not answer within 30s; see {directory}/flower.log")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.loads(response.read())

    def task(self, task_id: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self.get(f"/api/task/info/{task_id}")
            return info
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def tasks(self) -> dict[str, dict[str, Any]]:
        tasks: dict[str, dict[str, Any]] = self.get("/api/tasks")
        return tasks

    def wait_for_state(self, task_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            task = self.task(task_id)
            if task is not None:
                if not seen or seen[-1] != task["state"]:
                    seen.append(task["state"])
                if task["state"] == state:
                    return task
            time.sleep(0.05)
        raise AssertionError(f"Flower never showed run {task_id} as {state} within {timeout}s; saw {seen}")

    def worker_names(self) -> set[str]:
        return set(self.get("/api/workers?status=true"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def watched(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Flower, str]]:
    """A PostgreSQL stack on Redis db 14, one solo worker with -E, and Flower on the same broker."""
    directory = tmp_path_factory.mktemp("flower")
    stack = Stack("postgresql", directory, broker=FLOWER_BROKER)
    flower = None
    try:
        flower = Flower(stack, directory)
        worker_name = f"w0-{stack.tag}@{socket.gethostname()}"
        stack.start_worker(extra=("-E",))
        yield stack, flower, worker_name
    finally:
        if flower is not None:
            flower.stop()
        stack.close()


def test_a_run_shows_in_flower_through_every_phase(watched: tuple[Stack, Flower, str]) -> None:
    stack, flower, worker_name = watched
    run = stack.client.workflows["nap"].start(1.5, 2.5)

    running = flower.wait_for_state(run.id, "STARTED")
    assert running["name"] == "wf.nap" and running["args"] == "(1.5, 2.5)" and running["worker"] == worker_name
    assert running["root_id"] == run.id
    first_step = stack.wait_until(lambda: stack.step(run.id, "t.slow"), 10, "the first step")
    step_task = stack.wait_until(lambda: flower.task(first_step.celery_task_id), 10, "the step task in Flower")
    assert (step_task["name"], step_task["root_id"], step_task["parent_id"]) == ("t.slow", run.id, run.id)

    sleeping = flower.wait_for_state(run.id, "SLEEPING")
    assert sleeping["eta"], "the wake-up time shows as the task's ETA"
    assert stack.durable.run(run.id).status == "sleeping"

    again = flower.wait_for_state(run.id, "STARTED")
    assert again["eta"] is None and stack.durable.run(run.id).status == "running"

    done = flower.wait_for_state(run.id, "SUCCESS")
    assert done["result"] == "['first', 'second']" and done["runtime"] > 5
    children = {task_id: task for task_id, task in flower.tasks().items() if task.get("root_id") == run.id
                and task_id != run.id}
    names = sorted(task["name"] for task in children.values())
    assert names.count("t.slow") == 2 and all(task["parent_id"] == run.id for task in children.values())
    assert all(task["state"] == "SUCCESS" for task in children.values())


def test_a_parked_run_shows_as_failed_with_its_error(watched: tuple[Stack, Flower, str]) -> None:
    stack, flower, _ = watched
    stack.set_flag("broken-flower")
    run = stack.client.workflows["fixable"].start("flower")
    failed = flower.wait_for_state(run.id, "FAILURE")
    assert failed["name"] == "wf.fixable" and "bug in broken_until_fixed" in failed["exception"]
    assert stack.durable.run(run.id).status == "failed"

    stack.set_flag("broken-flower", on=False)
    stack.durable.resume(run.id)  # from this test process, a client: a worker announces it
    flower.wait_for_state(run.id, "SUCCESS")


def test_a_client_that_advances_runs_is_not_listed_as_a_worker(watched: tuple[Stack, Flower, str]) -> None:
    stack, flower, worker_name = watched
    chain = stack.durable.chain(stack.client.tasks["add"].s(1, 2), stack.client.tasks["double"].s())
    handle = chain.start()  # the tasks are registered here: this process journals the first dispatch itself
    assert handle.result(timeout=20) == 6
    flower.wait_for_state(handle.id, "SUCCESS")
    assert flower.worker_names() == {worker_name}, "only the real worker, no phantom for this process"
