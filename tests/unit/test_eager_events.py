"""durable_tasks.testing: events given up front and a clock that moves only when the workflow waits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from durable_tasks import Durable, EventTimeoutError, SerializationError
from durable_tasks.testing import Clock, Event, run_eagerly

HOUR, DAY = 3600.0, 86400.0


@pytest.fixture
def approval(durable: Durable) -> Any:
    @durable.workflow(name="unit.eager_approval")
    def approval(ctx: Any, order: int) -> dict[str, Any]:
        ctx.sleep("cool-off", "1 hour")
        try:
            decision = ctx.wait_for_event("approved", timeout="2 days", key=f"order-{order}")
        except EventTimeoutError:
            return {"outcome": "cancelled", "at": ctx.now()}
        return {"outcome": "shipped", "by": decision["by"], "at": ctx.now()}

    return approval


def test_an_event_within_the_timeout_is_delivered_when_it_arrives(approval: Any) -> None:
    clock = Clock(datetime(2027, 3, 1, 9, 0, tzinfo=UTC))
    outcome = run_eagerly(approval, 1, events=[Event("approved", {"by": "ana"}, after="5 hours")], clock=clock)
    assert outcome.result == {"outcome": "shipped", "by": "ana", "at": clock.start + 5 * HOUR}
    assert outcome.clock.elapsed == 5 * HOUR and outcome.slept == [HOUR]
    assert outcome.step_keys == ["cool-off", "approved"] and outcome.undelivered == []


def test_nobody_answers_and_the_timeout_branch_runs_at_the_deadline(approval: Any) -> None:
    outcome = run_eagerly(approval, 2, events=[Event("approved", {"by": "bob"}, after="3 days")])
    assert outcome.result["outcome"] == "cancelled"
    assert outcome.clock.elapsed == HOUR + 2 * DAY
    assert [event.payload for event in outcome.undelivered] == [{"by": "bob"}], "it came too late"
    assert outcome.journal[-1].status == "failed"


def test_an_event_sent_before_the_wait_is_taken_at_once(approval: Any) -> None:
    outcome = run_eagerly(approval, 3, events=[Event("approved", {"by": "early"}, key="order-3")])
    assert outcome.result["by"] == "early" and outcome.clock.elapsed == HOUR


def test_keys_and_event_ids_match_as_in_a_real_run(approval: Any) -> None:
    events = [Event("approved", {"by": "other order"}, key="order-99"),
              Event("approved", {"by": "second send"}, key="order-4", after="2h", event_id="e1"),
              Event("approved", {"by": "first send"}, key="order-4", after="1h", event_id="e1")]
    outcome = run_eagerly(approval, 4, events=events)
    assert outcome.result["by"] == "first send", "the later send of e1 is a duplicate, the other key not ours"
    assert [event.key for event in outcome.undelivered] == ["order-99"]


def test_a_wait_without_timeout_or_event_leaves_the_run_waiting(durable: Durable) -> None:
    @durable.workflow(name="unit.eager_forever")
    def forever(ctx: Any) -> Any:
        return ctx.wait_for_event("never")

    outcome = run_eagerly(forever)
    assert (outcome.status, outcome.waiting_for, outcome.result) == ("waiting", "never", None)


def test_an_uncaught_timeout_raises_like_a_parked_run(durable: Durable) -> None:
    @durable.workflow(name="unit.eager_strict")
    def strict(ctx: Any) -> Any:
        return ctx.wait_for_event("approved", "1h")

    with pytest.raises(EventTimeoutError, match="no event 'approved' arrived within its timeout of 1h"):
        run_eagerly(strict)


def test_sleep_until_moves_the_clock_to_that_moment(durable: Durable) -> None:
    @durable.workflow(name="unit.eager_until")
    def until(ctx: Any) -> float:
        ctx.sleep_until("renewal", datetime(2027, 1, 1, tzinfo=UTC))
        return ctx.now()

    start = datetime(2026, 12, 31, tzinfo=UTC)
    outcome = run_eagerly(until, clock=Clock(start))
    assert outcome.result == datetime(2027, 1, 1, tzinfo=UTC).timestamp() and outcome.slept == [DAY]


def test_event_payloads_must_be_json(approval: Any) -> None:
    with pytest.raises(SerializationError, match="payload of event 'approved'"):
        run_eagerly(approval, 5, events=[Event("approved", {1, 2})])
