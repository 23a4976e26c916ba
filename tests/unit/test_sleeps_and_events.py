"""Sleeps, ``sleep_until`` and event waits on SQLite, driven without a worker.

The runtime's publisher keeps its messages; :func:`drain` plays the worker by running every ``advance``
it was given. Time passing is the pending timers moved into the past (:func:`later`), so nothing sleeps.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery

from durable_tasks import (
    ConfigurationError,
    Durable,
    EventDelivery,
    EventTimeoutError,
    InvalidStateError,
    RunNotFoundError,
    SerializationError,
)
from durable_tasks.coordinator import advance
from durable_tasks.messages import AdvanceMessage
from durable_tasks.recovery import sweep
from durable_tasks.store import event_queries
from tests.support.publisher import KeptMessages

DAY = 86400.0


def drain(durable: Durable, broker: KeptMessages) -> int:
    """Run every advance message, and those they cause; returns how many ran."""
    ran = 0
    while True:
        advances = [message for message in broker.messages if isinstance(message, AdvanceMessage)]
        broker.messages = [message for message in broker.messages if not isinstance(message, AdvanceMessage)]
        if not advances:
            return ran
        for message in advances:
            advance(durable.runtime, message.run_id, consume=message.outbox_id)
            ran += 1


def later(durable: Durable, seconds: float) -> int:
    """As if ``seconds`` passed: pending timers come that much nearer; returns how many fire now."""
    with durable.store.begin() as conn:
        conn.exec_driver_sql(f"UPDATE durable_timers SET due_at = due_at - {seconds} WHERE fired_at IS NULL")
    return durable.timers.fire_due()


def timers_of(durable: Durable, run_id: str) -> list[tuple[str, float, float | None]]:
    with durable.store.read() as conn:
        rows = conn.exec_driver_sql("SELECT purpose, due_at, fired_at FROM durable_timers WHERE run_id = ? "
                                    "ORDER BY id", (run_id,)).all()
    return [(row[0], row[1], row[2]) for row in rows]


def signals_of(durable: Durable) -> list[Any]:
    with durable.store.read() as conn:
        return list(event_queries.list_signals(conn))


def waits(durable: Durable) -> list[Any]:
    with durable.store.read() as conn:
        return list(conn.exec_driver_sql("SELECT run_id, position, name, correlation_key FROM durable_waits"))


@pytest.fixture
def flows(durable: Durable) -> dict[str, Any]:
    @durable.workflow(name="unit.nap")
    def nap(ctx: Any, duration: Any) -> str:
        ctx.sleep("nap", timedelta(**duration) if isinstance(duration, dict) else duration)
        return "awake"

    @durable.workflow(name="unit.until")
    def until(ctx: Any, iso: str) -> str:
        ctx.sleep_until("renewal", datetime.fromisoformat(iso))
        return "renewed"

    @durable.workflow(name="unit.approval")
    def approval(ctx: Any, order: int, timeout: Any = "2 days") -> dict[str, Any]:
        try:
            decision = ctx.wait_for_event("approved", timeout, key=f"order-{order}")
        except EventTimeoutError as exc:
            return {"approved": False, "why": str(exc), "event": exc.event, "timeout": exc.timeout}
        return {"approved": True, "decision": decision}

    @durable.workflow(name="unit.strict")
    def strict(ctx: Any) -> Any:
        return ctx.wait_for_event("approved", "1 hour")  # uncaught: a timeout parks the run

    @durable.workflow(name="unit.nap_then_wait")
    def nap_then_wait(ctx: Any) -> Any:
        ctx.sleep("first", "1 hour")
        return ctx.wait_for_event("ready")

    @durable.workflow(name="unit.twice")
    def twice(ctx: Any) -> list[Any]:
        return [ctx.wait_for_event("tick"), ctx.wait_for_event("tick")]

    @durable.workflow(name="unit.bad_wait")
    def bad_wait(ctx: Any, timeout: Any) -> Any:
        ctx.step("before", lambda: "done")
        return ctx.wait_for_event("approved", timeout)

    @durable.workflow(name="unit.bad_sleep")
    def bad_sleep(ctx: Any, duration: Any) -> Any:
        ctx.step("before", lambda: "done")
        ctx.sleep("nap", duration)

    @durable.workflow(name="unit.naive")
    def naive(ctx: Any) -> Any:
        ctx.step("before", lambda: "done")
        ctx.sleep_until("renewal", datetime(2030, 1, 1, 9, 0))

    return {"nap": nap, "until": until, "approval": approval, "strict": strict, "nap_then_wait": nap_then_wait,
            "twice": twice, "bad_wait": bad_wait, "bad_sleep": bad_sleep, "naive": naive}


# --- sleeps ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("duration", "seconds"), [("30 days", 30 * DAY), ("1h30m", 5400), (90, 90),
                                                    ({"days": 3}, 3 * DAY)])
def test_a_sleep_parks_the_run_on_a_timer_and_wakes_when_it_fires(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any], duration: Any, seconds: float) -> None:
    started = time.time()
    handle = flows["nap"].run(duration)
    assert handle.status == "sleeping"
    ((purpose, due, fired),) = timers_of(durable, handle.id)
    assert purpose == "sleep" and fired is None and started + seconds <= due <= time.time() + seconds
    assert later(durable, seconds - 60) == 0, "never early"
    assert later(durable, 60) == 1
    drain(durable, broker)
    assert handle.result(timeout=1) == "awake"


def test_sleep_until_an_aware_datetime_fires_at_that_moment(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    when = datetime.now(ZoneInfo("Europe/Berlin")).replace(microsecond=0) + timedelta(days=10)
    handle = flows["until"].run(when.isoformat())
    ((purpose, due, _),) = timers_of(durable, handle.id)
    assert (purpose, due) == ("sleep", when.timestamp())
    assert json.loads(handle.steps()[0].result or "null") is None and handle.status == "sleeping"
    later(durable, 10 * DAY)
    drain(durable, broker)
    assert handle.result(timeout=1) == "renewed"


def test_sleep_until_a_past_moment_does_not_sleep(durable: Durable, flows: dict[str, Any]) -> None:
    handle = flows["until"].run(datetime(2020, 1, 1, tzinfo=UTC).isoformat())
    assert handle.result(timeout=1) == "renewed" and timers_of(durable, handle.id) == []


@pytest.mark.parametrize(("flow", "argument", "message"), [
    ("bad_sleep", -5, "The duration -5 is negative"),
    ("bad_sleep", "3 fortnights", "Cannot read '3 fortnights' as a duration"),
    ("bad_sleep", "inf", "Cannot read 'inf' as a duration"),
    ("bad_sleep", "400 days", "ctx.sleep('nap', '400 days') asks for 400d (34560000s), longer than max_sleep (366d)"),
    ("bad_wait", "-1h", "Cannot read '-1h' as a duration"),
    ("bad_wait", "500 days", "longer than max_sleep"),
    ("naive", None, "got the naive datetime 2030-01-01T09:00:00 (no time zone)"),
])
def test_bad_durations_and_naive_datetimes_park_the_run_with_the_value_and_write_no_step(
        durable: Durable, flows: dict[str, Any], flow: str, argument: Any, message: str) -> None:
    handle = flows[flow].run() if argument is None else flows[flow].run(argument)
    info = handle.info()
    assert info.status == "failed" and message in info.error["message"]
    assert info.error["type"] == "durable_tasks.errors.ConfigurationError"
    assert [step.step_key for step in handle.steps()] == ["before"], "nothing half-written"
    assert timers_of(durable, handle.id) == [] and waits(durable) == []


def test_the_naive_datetime_error_says_which_zone_to_use(durable: Durable, flows: dict[str, Any]) -> None:
    message = flows["naive"].run().info().error["message"]
    assert "ZoneInfo('Europe/Berlin')" in message and "timezone.utc" in message


def test_max_sleep_is_a_setting(app: Celery, tmp_path: Any) -> None:
    durable = Durable(app, store=f"sqlite:///{tmp_path / 'max.sqlite3'}", max_sleep="800 days")
    try:
        @durable.workflow(name="unit.long")
        def long(ctx: Any) -> str:
            ctx.sleep("long", "700 days")
            return "done"

        assert long.run().status == "sleeping"
        with pytest.raises(ConfigurationError, match=r"in durable.chain\(\) is 900d, longer than max_sleep \(800d\)"):
            durable.chain(durable.sleep("700 days"), durable.sleep(timedelta(days=900)))
    finally:
        durable.close()


# --- event waits -----------------------------------------------------------------------------------------


def test_a_waiting_run_gets_the_event_sent_to_its_id(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    handle = flows["approval"].run(1)
    assert handle.status == "waiting"
    (step,) = handle.steps()
    assert (step.step_key, step.kind, step.status) == ("approved", "event", "waiting")
    assert [purpose for purpose, _, _ in timers_of(durable, handle.id)] == ["event_timeout"]
    receipt = durable.send_event(handle.id, "approved", {"by": "ana"})
    assert receipt.outcome == EventDelivery.DELIVERED and (receipt.run_id, receipt.step_key) == (handle.id, "approved")
    assert waits(durable) == [] and timers_of(durable, handle.id)[0][2] is not None, "its timeout is cancelled"
    drain(durable, broker)
    assert handle.result(timeout=1) == {"approved": True, "decision": {"by": "ana"}}


def test_a_payload_of_none_is_a_value_not_a_timeout(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    handle = flows["approval"].run(2)
    durable.send_event(handle.id, "approved")
    drain(durable, broker)
    assert handle.result(timeout=1) == {"approved": True, "decision": None}


def test_no_event_within_the_timeout_takes_the_timeout_branch(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    handle = flows["approval"].run(3)
    assert later(durable, 2 * DAY - 60) == 0, "never early"
    assert later(durable, 60) == 1
    drain(durable, broker)
    result = handle.result(timeout=1)
    assert result["approved"] is False and (result["event"], result["timeout"]) == ("approved", 2 * DAY)
    assert "no event 'approved' on key 'order-3' arrived within its timeout of 2d" in result["why"]
    step = handle.steps()[0]
    assert step.status == "failed" and step.error["type"] == "durable_tasks.errors.EventTimeoutError"
    assert waits(durable) == []


def test_a_zero_timeout_takes_a_kept_event_or_times_out_at_once(durable: Durable, flows: dict[str, Any]) -> None:
    assert flows["approval"].run(4, 0).result(timeout=1)["approved"] is False
    durable.send_event(key="order-5", name="approved", payload="early")
    assert flows["approval"].run(5, 0).result(timeout=1) == {"approved": True, "decision": "early"}


def test_an_uncaught_timeout_parks_the_run_and_resume_waits_again(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    handle = flows["strict"].run()
    later(durable, 3600)
    drain(durable, broker)
    error = handle.info().error
    assert handle.status == "failed" and error["type"] == "durable_tasks.errors.EventTimeoutError"
    assert error["step"] == "approved"
    durable.resume(handle.id)
    drain(durable, broker)
    assert handle.status == "waiting" and len(waits(durable)) == 1
    pending = [row for row in timers_of(durable, handle.id) if row[2] is None]
    assert len(pending) == 1 and pending[0][1] > time.time() + 3500, "a fresh timeout"
    durable.send_event(handle.id, "approved", "late but welcome")
    drain(durable, broker)
    assert handle.result(timeout=1) == "late but welcome"


def test_an_event_sent_before_the_wait_is_kept_and_taken_when_the_run_waits(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    handle = flows["nap_then_wait"].run()
    receipt = durable.send_event(handle.id, "ready", 42)
    assert receipt.outcome == EventDelivery.KEPT and receipt.expires_at is not None
    assert receipt.expires_at == pytest.approx(time.time() + 7 * DAY, abs=5)
    assert handle.status == "sleeping", "the run is unchanged until it waits"
    later(durable, 3600)
    drain(durable, broker)
    assert handle.result(timeout=1) == 42
    (signal,) = signals_of(durable)
    assert (signal.consumed_position, signal.run_id) == (1, handle.id)


def test_an_event_for_a_correlation_key_waits_for_the_run_that_waits_on_it(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    kept = durable.send_event(key="order-7", name="approved", payload="before the run existed")
    assert kept.outcome == EventDelivery.KEPT and kept.run_id is None
    other = flows["approval"].run(6)
    assert other.status == "waiting", "another key's event is not taken"
    handle = flows["approval"].run(7)
    assert handle.result(timeout=1) == {"approved": True, "decision": "before the run existed"}
    delivered = durable.send_event(key="order-6", name="approved", payload="after")
    assert (delivered.outcome, delivered.run_id) == (EventDelivery.DELIVERED, other.id)
    drain(durable, broker)
    assert other.result(timeout=1)["decision"] == "after"


def test_the_same_event_id_is_delivered_once(durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    handle = flows["twice"].run()
    first = durable.send_event(handle.id, "tick", 1, event_id="tick-1")
    again = durable.send_event(handle.id, "tick", 1, event_id="tick-1")
    drain(durable, broker)
    assert first.outcome == EventDelivery.DELIVERED and again.outcome == EventDelivery.DUPLICATE
    assert handle.status == "waiting", "the second wait did not get the duplicate"
    durable.send_event(handle.id, "tick", 2, event_id="tick-2")
    drain(durable, broker)
    assert handle.result(timeout=1) == [1, 2]
    assert durable.send_event(handle.id, "tick", 1, event_id="tick-1").outcome == EventDelivery.DUPLICATE, \
        "a duplicate of an event that finished its run is still a duplicate, not an error"


def test_events_for_unknown_or_finished_runs_and_bad_payloads_are_refused_and_nothing_changes(
        durable: Durable, flows: dict[str, Any]) -> None:
    waiting = flows["approval"].run(8)
    finished = flows["until"].run("2020-01-01T00:00:00+00:00")
    before = (waiting.info(), waiting.steps(), waits(durable))
    with pytest.raises(RunNotFoundError, match=r"No run with id 'no-such-run'.*'approved' was not stored"):
        durable.send_event("no-such-run", "approved", 1)
    with pytest.raises(InvalidStateError, match=f"Run {finished.id} is succeeded; a finished run takes no events"):
        durable.send_event(finished.id, "approved", 1)
    with pytest.raises(SerializationError, match=r"payload of event 'approved' for run .* value\['when'\] is of "
                                                 "type builtins.object"):
        durable.send_event(waiting.id, "approved", {"when": object()})
    with pytest.raises(SerializationError, match="payload of event 'approved' for correlation key 'order-8'"):
        durable.send_event(key="order-8", name="approved", payload=float("nan"))
    with pytest.raises(ConfigurationError, match="one address"):
        durable.send_event(waiting.id, "approved", key="order-8")
    with pytest.raises(ConfigurationError, match="An event name must be non-empty text"):
        durable.send_event(waiting.id, "")
    assert (waiting.info(), waiting.steps(), waits(durable)) == before and signals_of(durable) == []


def test_a_delivered_event_and_its_timeout_resolve_to_one_outcome(
        durable: Durable, broker: KeptMessages, flows: dict[str, Any]) -> None:
    delivered = flows["approval"].run(9)
    durable.send_event(delivered.id, "approved", "yes")
    assert later(durable, 3 * DAY) == 0, "the timer of a wait that got its event does nothing"
    timed_out = flows["approval"].run(10)
    assert later(durable, 3 * DAY) == 1
    late = durable.send_event(timed_out.id, "approved", "too late")
    assert late.outcome == EventDelivery.KEPT, "kept, as for any event no wait takes"
    drain(durable, broker)
    assert delivered.result(timeout=1)["decision"] == "yes"
    assert timed_out.result(timeout=1)["approved"] is False


def test_cancelling_a_waiting_run_ends_its_wait_and_timer(durable: Durable, flows: dict[str, Any]) -> None:
    handle = flows["approval"].run(11)
    durable.cancel(handle.id)
    assert handle.steps()[0].status == "cancelled" and waits(durable) == []
    assert all(fired is not None for _, _, fired in timers_of(durable, handle.id))
    with pytest.raises(InvalidStateError, match="is cancelled"):
        durable.send_event(handle.id, "approved")
    assert durable.send_event(key="order-11", name="approved").outcome == EventDelivery.KEPT


def test_kept_events_expire_and_the_sweeper_deletes_them(app: Celery, tmp_path: Any) -> None:
    durable = Durable(app, store=f"sqlite:///{tmp_path / 'expiry.sqlite3'}", event_retention="1h")
    try:
        durable.send_event(key="order-12", name="approved", payload="stale")
        with durable.store.begin() as conn:
            conn.exec_driver_sql("UPDATE durable_signals SET expires_at = expires_at - 3601")

        @durable.workflow(name="unit.expired")
        def flow(ctx: Any) -> Any:
            return ctx.wait_for_event("approved", 0, key="order-12")

        with pytest.raises(Exception, match="timed out"):
            flow.run().result(timeout=1)
        assert len(signals_of(durable)) == 1
        sweep(durable.runtime)
        assert signals_of(durable) == []
    finally:
        durable.close()


def test_the_timer_poll_reads_only_due_rows_through_an_index_in_due_order(durable: Durable) -> None:
    with durable.store.read() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT * FROM durable_timers WHERE fired_at IS NULL AND due_at <= 1 "
            "ORDER BY due_at LIMIT 200"))
    assert "SEARCH durable_timers USING INDEX ix_durable_timers_" in plan and "due_at<?" in plan, plan
    assert "TEMP B-TREE" not in plan, f"a sort would read every due timer before the first batch: {plan}"
