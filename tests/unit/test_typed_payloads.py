"""Values Celery's JSON carries (datetime, Decimal, UUID, bytes) are journaled and replayed with their type."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from durable_tasks import Durable, coordinator

PAID_AT = datetime(2024, 5, 1, 9, 30, 15, 123456, tzinfo=UTC)
ORDER = uuid.UUID("3f2c9a4e-1b7d-4c8e-9f00-0123456789ab")
PAYMENT = {"order": ORDER, "amount": Decimal("21.00"), "at": PAID_AT, "receipt": b"\x00\xffPDF"}


def charge(order: uuid.UUID, amount: Decimal) -> dict[str, Any]:
    return {"order": order, "amount": amount * 2, "at": PAID_AT, "receipt": b"\x00\xffPDF"}


def test_typed_input_step_result_and_run_result_round_trip(durable: Durable) -> None:
    @durable.workflow(name="unit.typed")
    def typed(ctx: Any, order: uuid.UUID, amount: Decimal, due: date) -> dict[str, Any]:
        return {**ctx.step("charge", charge, order, amount), "due": due}

    handle = typed.run(ORDER, Decimal("10.50"), date(2024, 6, 1))
    assert handle.result() == {**PAYMENT, "due": date(2024, 6, 1)}
    assert handle.steps()[0].result == PAYMENT


def test_replay_hands_the_workflow_the_same_types_as_the_first_run(durable: Durable, tasks: dict[str, Any]) -> None:
    seen: list[dict[str, Any]] = []

    @durable.workflow(name="unit.typed_replay")
    def typed(ctx: Any, order: uuid.UUID) -> Any:
        seen.append(ctx.step("charge", charge, order, Decimal("10.50")))
        return ctx.run(tasks["add"], 1, 2)  # dispatched: the run waits here

    handle = typed.run(ORDER)
    coordinator.advance(durable.runtime, handle.id)  # a second replay reads the charge step back from the journal
    assert len(seen) == 2 and seen[0] == seen[1] == PAYMENT
    assert [type(value) for value in seen[1].values()] == [uuid.UUID, Decimal, datetime, bytes]
    assert str(seen[1]["amount"]) == "21.00" and seen[1]["at"].tzinfo is not None
