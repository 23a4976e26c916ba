"""Run events, fed to Celery's own ``events.State`` (what Flower keeps), at each phase of real runs.

The engine runs on SQLite without a broker (the publisher keeps the messages; the test delivers them),
and the events observer writes into a list instead of the broker. Each phase's events go through
``celery.events.state.State`` exactly as Flower receives them, and the test reads the run's task there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from celery import Celery
from celery.events.state import State

from durable_tasks import Durable, RetryPolicy
from durable_tasks.celery_events import WorkerEvents
from durable_tasks.coordinator import advance
from durable_tasks.messages import AdvanceMessage, StepMessage
from durable_tasks.operations import Operations
from durable_tasks.run_events import RunEvents
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages

WORKER = "w1@host"


class Flowerish:
    """Collects events and keeps a Celery ``State`` up to date, as Flower does."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.state = State()
        self.clock = 0

    def send(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        for type_, fields in events:
            self.clock += 1
            event = {"type": type_, "hostname": WORKER, "clock": self.clock, "local_received": time.time(),
                     "timestamp": time.time(), **fields}
            self.events.append((type_, dict(fields)))
            self.state.event(event)

    def task(self, run_id: str) -> Any:
        return self.state.tasks[run_id]

    def types(self) -> list[str]:
        return [type_ for type_, _ in self.events if type_.startswith("task-")]




@pytest.fixture
def flower(durable: Durable) -> Flowerish:
    sink = Flowerish()
    durable.runtime.observers[:] = [RunEvents(sink)]
    return sink


def pump(durable: Durable, broker: KeptMessages, *, fail: bool = False, only: type | None = None) -> None:
    """Deliver every kept message (of type ``only``) once, as a worker would."""
    for message in broker.take():
        if only is not None and not isinstance(message, only):
            broker.messages.append(message)
            continue
        if isinstance(message, StepMessage):
            task = durable.app.tasks[message.task]
            try:
                execute(durable.runtime, task, message, task.run)
            except Exception:
                if not fail:
                    raise
        elif isinstance(message, AdvanceMessage):
            advance(durable.runtime, message.run_id, consume=message.outbox_id)


def wake_timers(durable: Durable) -> None:
    with durable.store.begin() as conn:
        conn.exec_driver_sql("UPDATE durable_timers SET due_at = due_at - 3600 WHERE fired_at IS NULL")
    durable.timers.fire_due()


def test_a_run_shows_received_started_sleeping_running_again_and_succeeded(
        durable: Durable, tasks: dict[str, Any], flower: Flowerish, broker: KeptMessages) -> None:
    @durable.workflow(name="shop.checkout")
    def checkout(ctx: Any, order: int, *, note: str = "") -> int:
        first = ctx.run(tasks["add"], order, 1)
        ctx.sleep("cool-off", "1h")
        return int(ctx.run(tasks["add"], first, 10))

    handle = checkout.start(41, note="gift")
    pump(durable, broker)  # the first advance: dispatches the first step
    task = flower.task(handle.id)
    assert (task.name, task.state, task.args, task.kwargs) == ("shop.checkout", "STARTED", "(41,)",
                                                               "{'note': 'gift'}")
    assert task.root_id == handle.id and task.worker.hostname == WORKER

    pump(durable, broker)  # the step's result; the replay journals the sleep
    task = flower.task(handle.id)
    assert task.state == "SLEEPING" and task.eta is not None

    wake_timers(durable)
    pump(durable, broker)  # the advance after the timer: the second step is dispatched
    assert flower.task(handle.id).state == "STARTED", "awake again (through RETRY), not stuck in SLEEPING"

    pump(durable, broker)
    task = flower.task(handle.id)
    assert (task.state, task.result, task.exception) == ("SUCCESS", "52", None)
    assert task.runtime is not None and task.runtime >= 0
    assert flower.types() == ["task-received", "task-started", "task-sleeping", "task-retried", "task-started",
                              "task-succeeded"]
    assert handle.result(timeout=1) == 52


def test_a_failed_run_shows_its_exception_and_a_resume_reopens_it(
        app: Celery, durable: Durable, flower: Flowerish, broker: KeptMessages) -> None:
    broken = {"on": True}

    @durable.step(retry=RetryPolicy(max_attempts=1))
    @app.task(name="u.fragile", shared=False)
    def fragile() -> str:
        if broken["on"]:
            raise ValueError("card declined")
        return "ok"

    @durable.workflow(name="shop.pay")
    def pay(ctx: Any) -> str:
        return str(ctx.run(fragile))

    handle = pay.start()
    pump(durable, broker)
    pump(durable, broker, fail=True)
    task = flower.task(handle.id)
    assert task.state == "FAILURE" and task.exception == "ValueError('card declined')"
    assert "Step 'u.fragile' failed" in task.traceback

    broken["on"] = False
    # An operator outside any worker: the change is announced by the worker that consumes its advance.
    operations = Operations(durable.store, durable.runtime.unit_of_work)
    durable.runtime.observers[:] = []
    operations.resume(handle.id)
    durable.runtime.observers[:] = [RunEvents(flower)]
    assert flower.task(handle.id).state == "FAILURE"
    pump(durable, broker, only=AdvanceMessage)
    assert flower.task(handle.id).state == "STARTED"
    pump(durable, broker)
    assert flower.task(handle.id).state == "SUCCESS"


def test_a_cancelled_sleeping_run_is_revoked(durable: Durable, flower: Flowerish, broker: KeptMessages) -> None:
    @durable.workflow(name="shop.wait")
    def wait(ctx: Any) -> None:
        ctx.sleep("long", "1d")

    handle = wait.start()
    pump(durable, broker)
    assert flower.task(handle.id).state == "SLEEPING"
    durable.runtime.observers[:] = []  # cancelled from a client: it sends nothing itself
    durable.cancel(handle.id, "customer left")
    durable.runtime.observers[:] = [RunEvents(flower)]
    pump(durable, broker)
    task = flower.task(handle.id)
    assert task.state == "REVOKED" and "customer left" in task.exception


def test_durable_events_carry_step_detail(durable: Durable, tasks: dict[str, Any], flower: Flowerish,
                                          broker: KeptMessages) -> None:
    @durable.workflow(name="shop.one")
    def one(ctx: Any) -> int:
        return int(ctx.run(tasks["add"], 1, 2))

    handle = one.start()
    pump(durable, broker)
    pump(durable, broker)
    steps = [fields for type_, fields in flower.events if type_ == "durable-step"]
    assert [(step["step_key"], step["status"], step["attempt"]) for step in steps] == [
        ("u.add", "dispatched", 1), ("u.add", "running", 1), ("u.add", "succeeded", 1)]
    assert steps[-1]["duration"] >= 0 and steps[0]["task_id"]
    runs = [fields for type_, fields in flower.events if type_ == "durable-run"]
    assert [(run["run_id"], run["status"]) for run in runs] == [(handle.id, "pending"), (handle.id, "running"),
                                                                  (handle.id, "succeeded")]


def test_only_a_worker_with_task_events_sends(app: Celery, caplog: pytest.LogCaptureFixture) -> None:
    sink = WorkerEvents(app)
    sink.send([("task-started", {"uuid": "x"})])  # a client: nothing, and no connection is opened
    assert sink._dispatcher is None
    sink.attach("w1@host", task_events=False)
    sink.send([("task-started", {"uuid": "x"})])
    assert sink._dispatcher is None and not sink.active
    (warning,) = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert "w1@host" in warning and "-E" in warning


def test_a_run_first_advanced_by_a_client_opens_with_its_name_and_arguments_in_the_worker(
        durable: Durable, tasks: dict[str, Any], flower: Flowerish, broker: KeptMessages) -> None:
    @durable.workflow(name="shop.inline_first")
    def inline_first(ctx: Any, order: int) -> int:
        ctx.step("reserve", lambda: order)
        return int(ctx.run(tasks["add"], order, 1))

    observers = list(durable.runtime.observers)
    durable.runtime.observers[:] = []  # Workflow.run in a client: the first advance sends nothing
    handle = inline_first.run(7)
    durable.runtime.observers[:] = observers
    pump(durable, broker)  # the worker journals the step's result and finishes the run
    task = flower.task(handle.id)
    assert (task.name, task.args, task.state, task.result) == ("shop.inline_first", "(7,)", "SUCCESS", "8")
    assert task.received is not None and task.started is not None
