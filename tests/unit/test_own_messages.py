"""The user's own messages through the outbox, on SQLite with a publisher and a Kafka producer played by hand.

``ctx.send_task`` / ``ctx.publish`` are journaled as ``message`` steps; ``current_step().send_task`` /
``.publish`` commit with the step's result. Each message leaves after its commit, carries a stable id, and its
outbox row ends when the broker confirms it; the relay re-sends whatever was never confirmed.
"""

from __future__ import annotations

from typing import Any

import pytest

from durable_tasks import ConfigurationError, Durable, current_step
from durable_tasks.messages import TaskMessage
from durable_tasks.outbox import relay
from durable_tasks.testing import run_eagerly
from tests.support.publisher import KeptMessages, KeptRecords
from tests.unit.test_engine_without_broker import an_hour_later, deliver


@pytest.fixture
def broker(durable: Durable) -> KeptMessages:
    kept = KeptMessages()
    durable.runtime.publisher = kept
    return kept


@pytest.fixture
def kafka(durable: Durable) -> KeptRecords:
    kept = KeptRecords()
    durable.runtime.topics.producer = kept
    return kept


def own_rows(durable: Durable) -> list[Any]:
    with durable.store.read() as conn:
        return list(conn.exec_driver_sql("SELECT kind, payload FROM durable_outbox WHERE kind != 'advance'"))


def test_a_workflow_message_is_journaled_sent_once_after_commit_and_never_on_replay(
        durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.notify")
    def flow(ctx: Any, order: int) -> Any:
        sent = ctx.send_task(tasks["plain"].s(order).set(queue="mail"))
        again = ctx.send_task("other.app.audit", order, reason="checkout")
        total = ctx.run(tasks["add"], order, 1)
        return [sent, again, total]

    handle = flow.run(7)
    first, second = broker.own()
    assert first == TaskMessage(f"{handle.id}:u.plain", handle.id, "u.plain", [7], {}, {"queue": "mail"},
                                first.outbox_id)
    assert (second.id, second.task, second.args, second.kwargs) == (
        f"{handle.id}:other.app.audit", "other.app.audit", [7], {"reason": "checkout"})
    assert own_rows(durable) == [], "the broker took both: their rows ended"
    deliver(durable, broker.last_step())  # the replay after the task step passes both messages again
    assert len(broker.own()) == 2, "a replay returns the journaled id and sends nothing"
    assert handle.result(timeout=1) == [first.id, second.id, 8]
    steps = handle.steps()
    assert [(step.kind, step.step_key, step.status) for step in steps[:2]] == [
        ("message", "u.plain", "succeeded"), ("message", "other.app.audit", "succeeded")]


def test_a_task_steps_messages_commit_with_its_result_and_carry_run_step_n(
        app: Any, durable: Durable, broker: KeptMessages) -> None:
    @durable.step
    @app.task(name="u.charge", shared=False)
    def charge(order: int) -> str:
        step = current_step()
        assert step is not None
        ids = [step.send_task("mail.receipt", order), step.send_task("ledger.book", order, amount=10)]
        assert broker.own() == [], "nothing leaves before the result is journaled"
        return ",".join(ids)

    @durable.workflow(name="unit.charge")
    def flow(ctx: Any, order: int) -> Any:
        return ctx.run(charge, order)

    handle = flow.run(3)
    assert deliver(durable, broker.last_step()) == f"{handle.id}:u.charge:1,{handle.id}:u.charge:2"
    assert [(message.id, message.task) for message in broker.own()] == [
        (f"{handle.id}:u.charge:1", "mail.receipt"), (f"{handle.id}:u.charge:2", "ledger.book")]
    assert own_rows(durable) == []


def test_a_failed_attempt_sends_nothing_and_a_duplicate_delivery_sends_nothing_again(
        app: Any, durable: Durable, broker: KeptMessages) -> None:
    from durable_tasks import RetryPolicy

    calls: list[int] = []

    @durable.step(retry=RetryPolicy(max_attempts=2, initial=0.01, jitter=0))
    @app.task(name="u.flaky_sender", shared=False)
    def flaky_sender() -> int:
        step = current_step()
        assert step is not None
        step.send_task("mail.receipt", step.attempt)
        calls.append(step.attempt)
        if step.attempt == 1:
            raise ConnectionError("gateway down after the message was buffered")
        return step.attempt

    @durable.workflow(name="unit.flaky_sender")
    def flow(ctx: Any) -> Any:
        return ctx.run(flaky_sender)

    handle = flow.run()
    first = broker.last_step()
    with pytest.raises(ConnectionError):
        deliver(durable, first)
    assert broker.own() == [], "the failed attempt's message never left"
    with durable.store.begin() as conn:  # the backoff timer is due: fire it as the timer service would
        conn.exec_driver_sql("UPDATE durable_timers SET due_at = 0")
    durable.timers.fire_due()
    retry = broker.last_step()
    assert retry.attempt == 2
    assert deliver(durable, retry) == 2
    assert deliver(durable, retry) == 2, "a duplicate delivery returns the journaled result"
    (sent,) = broker.own()
    assert (sent.id, sent.args) == (f"{handle.id}:u.flaky_sender:1", [2]), "the same id whatever the attempt"
    assert calls == [1, 2]


def test_an_unconfirmed_message_stays_and_the_relay_sends_it_again_whatever_its_queue_holds(
        durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.down")
    def flow(ctx: Any) -> Any:
        return ctx.send_task("mail.receipt", 1)

    broker.down = True
    handle = flow.run()
    assert handle.status == "succeeded" and broker.own() == []
    assert [kind for kind, _ in own_rows(durable)] == ["task_message"], "kept until the broker confirms it"
    broker.down = False
    broker.depths = {"celery": 12}  # a backlog: an advance would be left alone, an unconfirmed message is not
    assert relay(durable.store, broker, redelivery_after=60) == 0, "not due yet"
    an_hour_later(durable)
    assert relay(durable.store, broker, redelivery_after=60) == 1
    (sent,) = broker.own()
    assert sent.id == f"{handle.id}:mail.receipt"
    assert own_rows(durable) == [], "confirmed by the resend"


def test_a_cancelled_run_still_sends_what_its_steps_committed(
        durable: Durable, broker: KeptMessages, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.cancelled")
    def flow(ctx: Any) -> Any:
        ctx.send_task("mail.receipt", 1)
        return ctx.run(tasks["add"], 1, 2)

    broker.down = True
    handle = flow.run()
    durable.cancel(handle.id)
    assert [kind for kind, _ in own_rows(durable)] == ["task_message"]
    broker.down = False
    an_hour_later(durable)
    relay(durable.store, broker, redelivery_after=60)
    assert [message.task for message in broker.own()] == ["mail.receipt"]


def test_publish_without_kafka_fails_the_run_with_what_to_configure(durable: Durable, broker: KeptMessages) -> None:
    @durable.workflow(name="unit.publish_unconfigured")
    def flow(ctx: Any) -> Any:
        return ctx.publish("orders", {"id": 1})

    handle = flow.run()
    assert handle.status == "failed"
    assert "kafka_servers" in handle.info().error["message"]


def test_kafka_records_end_their_row_when_kafka_confirms(
        app: Any, durable: Durable, broker: KeptMessages, kafka: KeptRecords) -> None:
    @durable.step
    @app.task(name="u.ship", shared=False)
    def ship(order: int) -> int:
        step = current_step()
        assert step is not None
        step.publish("orders.shipped", {"order": order}, key=str(order))
        return order

    @durable.workflow(name="unit.publish")
    def flow(ctx: Any, order: int) -> Any:
        record_id = ctx.publish("orders.started", b"raw bytes", key=b"k")
        return [record_id, ctx.run(ship, order)]

    handle = flow.run(5)
    (started, _), = kafka.records
    assert (started.id, started.topic, started.value, started.key) == (
        f"{handle.id}:orders.started", "orders.started", b"raw bytes", b"k")
    assert [kind for kind, _ in own_rows(durable)] == ["topic_message"], "produced, not yet confirmed"
    kafka.confirm()
    assert own_rows(durable) == []
    deliver(durable, broker.last_step())
    kafka.confirm(error=RuntimeError("NOT_ENOUGH_REPLICAS"))
    assert [kind for kind, _ in own_rows(durable)] == ["topic_message"], "a refused record stays"
    an_hour_later(durable)
    assert relay(durable.store, broker, redelivery_after=60, topics=durable.runtime.topics) == 1
    (shipped,) = kafka.confirm()
    assert (shipped.id, shipped.value, shipped.key) == (f"{handle.id}:u.ship:1", {"order": 5}, "5")
    assert own_rows(durable) == []
    assert handle.result(timeout=1) == [started.id, 5]


def test_an_inline_steps_messages_commit_with_its_result(durable: Durable, broker: KeptMessages) -> None:
    def book(order: int) -> int:
        step = current_step()
        assert step is not None
        step.send_task("ledger.book", order)
        return order

    @durable.workflow(name="unit.inline_sender")
    def flow(ctx: Any) -> Any:
        return ctx.step("book", book, 9)

    handle = flow.run()
    assert handle.result(timeout=1) == 9
    assert [(message.id, message.args) for message in broker.own()] == [(f"{handle.id}:book:1", [9])]


def test_options_the_outbox_cannot_keep_are_refused(durable: Durable, broker: KeptMessages,
                                                    tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.refused")
    def flow(ctx: Any) -> Any:
        return ctx.send_task(tasks["plain"].s(1).set(task_id="mine"))

    handle = flow.run()
    assert handle.status == "failed" and "task_id" in handle.info().error["message"]
    assert broker.own() == []


def test_the_eager_runner_lists_what_a_run_sent(durable: Durable, app: Any) -> None:
    @durable.step
    @app.task(name="u.eager_sender", shared=False)
    def eager_sender() -> str:
        step = current_step()
        assert step is not None
        return step.publish("audit", "text")

    @durable.workflow(name="unit.eager_sender")
    def flow(ctx: Any) -> Any:
        ctx.send_task("mail.receipt", 1)
        return ctx.run(eager_sender)

    outcome = run_eagerly(flow)
    assert [getattr(message, "task", None) or message.topic for message in outcome.sent] == ["mail.receipt", "audit"]
    assert outcome.result.endswith(":u.eager_sender:1")


def test_a_step_info_made_by_hand_has_no_outbox() -> None:
    from durable_tasks import InvalidStateError, StepInfo

    with pytest.raises(InvalidStateError):
        StepInfo("run", "step", 0, 1).send_task("x")


def test_a_topic_must_be_named(durable: Durable, kafka: KeptRecords) -> None:
    @durable.workflow(name="unit.no_topic")
    def flow(ctx: Any) -> Any:
        return ctx.publish("", 1)

    handle = flow.run()
    assert handle.status == "failed" and "topic" in handle.info().error["message"]
    assert ConfigurationError.__name__ in handle.info().error["type"]
