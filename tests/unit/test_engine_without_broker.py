"""The relay, the sweeper and the step wrapper on SQLite, with no Celery worker and no broker.

The runtime's publisher is replaced by one that keeps the messages it is given, so each test plays the
broker's part by hand: it delivers a step message to the wrapper, or drops it to see the relay resend it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from durable_tasks import Durable, RetryPolicy
from durable_tasks.messages import AdvanceMessage, StepMessage
from durable_tasks.outbox import relay
from durable_tasks.recovery import sweep
from durable_tasks.store import queries
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages


@pytest.fixture
def flow(durable: Durable, tasks: dict[str, Any]) -> Any:
    @durable.workflow(name="unit.two_steps")
    def flow(ctx: Any, n: int) -> int:
        return ctx.run(tasks["add"], ctx.run(tasks["add"], n, 1), 10)

    return flow


def an_hour_later(durable: Durable) -> None:
    """Move every pending message's publish time an hour back, as if an hour had passed."""
    with durable.store.begin() as conn:
        conn.exec_driver_sql("UPDATE durable_outbox SET publish_after = publish_after - 3600")
        conn.exec_driver_sql("UPDATE durable_steps SET publish_after = publish_after - 3600")


def deliver(durable: Durable, message: StepMessage, body: Any = None) -> Any:
    """What a worker does with a step message: the wrapper around the task's body."""
    task = durable.app.tasks[message.task]
    return execute(durable.runtime, task, message, body or (lambda *args, **kwargs: task.run(*args, **kwargs)))


def test_the_wrapper_journals_the_result_and_dispatches_the_next_step_in_one_commit(
        durable: Durable, broker: KeptMessages, flow: Any, tasks: dict[str, Any]) -> None:
    handle = flow.run(1)
    first = broker.steps()[-1]
    commits = durable.store.commits
    assert deliver(durable, first) == 2
    assert durable.store.commits - commits == 2, "a claim, then the result with the next dispatch"
    second = broker.steps()[-1]
    assert (second.step_key, second.args, second.attempt) == ("u.add#2", [2, 10], 1)
    assert deliver(durable, second) == 12
    assert handle.result(timeout=1) == 12


def test_a_duplicate_delivery_returns_the_journaled_result_without_running_the_body(
        durable: Durable, broker: KeptMessages, flow: Any) -> None:
    flow.run(1)
    first = broker.steps()[-1]
    deliver(durable, first)
    ran: list[Any] = []
    assert deliver(durable, first, body=lambda *args: ran.append(args)) == 2
    assert ran == [], "I1: a journaled step never runs again"


def test_a_failed_attempt_is_journaled_and_waits_on_a_durable_timer(
        app: Any, durable: Durable, broker: KeptMessages) -> None:
    @durable.step(retry=RetryPolicy(max_attempts=3, initial=60, jitter=0))
    @app.task(name="u.flaky", shared=False)
    def flaky() -> None:
        raise ConnectionError("gateway unreachable")

    @durable.workflow(name="unit.flaky")
    def flow(ctx: Any) -> Any:
        return ctx.run(flaky)

    handle = flow.run()
    with pytest.raises(ConnectionError):
        deliver(durable, broker.steps()[-1])
    step = handle.steps()[0]
    assert step.status == "retrying" and step.error["message"] == "gateway unreachable"
    assert [attempt.status for attempt in step.attempts] == ["failed"]
    with durable.store.read() as conn:
        due = queries.due_timers(conn, time.time() + 61, 10)
    assert [(timer.purpose, timer.position) for timer in due] == [("retry", 0)]


def test_the_relay_resends_what_the_broker_never_got(durable: Durable, broker: KeptMessages, flow: Any) -> None:
    broker.down = True
    handle = flow.start(1)
    assert broker.messages == [] and handle.status == "pending"
    broker.down = False
    assert relay(durable.store, broker, redelivery_after=60) == 0, "not due yet: it may still be queued"
    an_hour_later(durable)
    assert relay(durable.store, broker, redelivery_after=60) == 1
    assert relay(durable.store, broker, redelivery_after=60) == 0, "sent again only after a longer wait"
    (advance,) = broker.messages
    assert isinstance(advance, AdvanceMessage) and advance.run_id == handle.id and advance.outbox_id is not None


def test_the_relay_resends_an_unclaimed_dispatch_with_the_same_task_id(
        durable: Durable, broker: KeptMessages, flow: Any) -> None:
    flow.run(1)
    (sent,) = broker.steps()
    broker.messages.clear()
    an_hour_later(durable)
    assert relay(durable.store, broker, redelivery_after=60) == 1
    (again,) = broker.steps()
    assert again == sent, "the same message: a duplicate is harmless, the claim takes only one"


def test_the_sweeper_redispatches_a_step_held_by_a_dead_worker(
        durable: Durable, broker: KeptMessages, flow: Any) -> None:
    handle = flow.run(1)
    first = broker.steps()[-1]
    with durable.store.begin() as conn:  # a worker that claimed the step, then died without a heartbeat
        queries.claim_step(conn, handle.id, 0, 1, "gone-host:1:abc", time.time() - 3600)
    report = sweep(durable.runtime)
    assert (report.redispatched, report.parked) == (1, 0)
    again = broker.steps()[-1]
    assert (again.step_key, again.attempt) == (first.step_key, 2) and again.task_id != first.task_id
    assert [attempt.status for attempt in handle.steps()[0].attempts] == ["lost"]
    assert deliver(durable, again) == 2


def test_the_sweeper_parks_a_step_that_keeps_killing_its_worker(
        app: Any, tmp_path: Any, tasks: dict[str, Any]) -> None:
    from celery import Celery

    app = Celery("unit-sweep", broker="memory://", set_as_current=False)
    durable = Durable(app, store=f"sqlite:///{tmp_path / 'sweep.sqlite3'}", max_lost_attempts=2)
    try:
        broker = KeptMessages()
        durable.runtime.publisher = broker

        @durable.step
        @app.task(name="u.crash", shared=False)
        def crash() -> None: ...

        @durable.workflow(name="unit.crash")
        def flow(ctx: Any) -> Any:
            return ctx.run(crash)

        handle = flow.run()
        for attempt in (1, 2):
            with durable.store.begin() as conn:
                queries.claim_step(conn, handle.id, 0, attempt, "gone-host:1:abc", time.time() - 3600)
            sweep(durable.runtime)
        step = handle.steps()[0]
        assert step.status == "failed" and "lost 2 times in a row" in step.error["message"]
        assert [attempt.status for attempt in step.attempts] == ["lost", "lost"]
    finally:
        durable.close()


def _three_queued(durable: Durable, broker: KeptMessages, flow: Any) -> list[StepMessage]:
    for n in range(3):
        flow.run(n)
    an_hour_later(durable)
    sent = broker.steps()
    broker.messages.clear()
    return sent


def test_a_backlog_is_not_taken_for_loss(durable: Durable, broker: KeptMessages, flow: Any) -> None:
    _three_queued(durable, broker, flow)
    broker.depths = {"celery": 3}  # all three still wait in the queue, an hour after they were sent
    assert relay(durable.store, broker, redelivery_after=60) == 0
    assert broker.messages == []


def test_a_message_the_queue_passed_is_resent(durable: Durable, broker: KeptMessages, flow: Any) -> None:
    first, second, _ = _three_queued(durable, broker, flow)
    broker.depths = {"celery": 1}
    with durable.store.begin() as conn:  # a worker took the second message ten seconds ago: the first was lost
        queries.claim_step(conn, second.run_id, 0, 1, "w:1:x", time.time() - 10)
    assert relay(durable.store, broker, redelivery_after=60) == 1
    assert broker.steps() == [first], "the third still waits in the queue: it is not sent twice"


def test_a_message_passed_a_moment_ago_may_still_be_in_a_prefetch_buffer(
        durable: Durable, broker: KeptMessages, flow: Any) -> None:
    _, second, _ = _three_queued(durable, broker, flow)
    broker.depths = {"celery": 1}
    with durable.store.begin() as conn:
        queries.claim_step(conn, second.run_id, 0, 1, "w:1:x", time.time())
    assert relay(durable.store, broker, redelivery_after=60) == 0


def test_everything_overdue_in_an_empty_queue_was_lost(durable: Durable, broker: KeptMessages, flow: Any) -> None:
    sent = _three_queued(durable, broker, flow)
    broker.depths = {"celery": 0}  # the broker restarted and kept nothing
    assert relay(durable.store, broker, redelivery_after=60) == 3
    assert sorted(message.run_id for message in broker.steps()) == sorted(message.run_id for message in sent)
