"""The approval example of docs/sleeps-and-events.md, run as written (eagerly, then on SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from durable_tasks import Durable, EventTimeoutError, EventTokenError
from durable_tasks.coordinator import advance
from durable_tasks.messages import AdvanceMessage, StepMessage
from durable_tasks.testing import Event, run_eagerly
from tests.support.publisher import KeptMessages


class Shop:
    """The docs' refund workflow with its tasks; ``mails`` collects what ``send_mail`` would send."""

    def __init__(self, tmp_path: Path) -> None:
        self.app = Celery("proj", broker="memory://", set_as_current=False)
        self.app.conf.durable_event_secret = "docs-example-secret-0123456789"
        self.durable = durable = Durable(self.app, store=f"sqlite:///{tmp_path / 'shop.sqlite3'}")
        self.mails: list[str] = []
        mails = self.mails

        @durable.step
        @self.app.task(name="proj.pay_refund", shared=False)
        def pay_refund(order_id: int) -> str:
            return f"paid {order_id}"

        @durable.step
        @self.app.task(name="proj.reject_refund", shared=False)
        def reject_refund(order_id: int, why: str) -> str:
            return f"rejected {order_id}: {why}"

        def ask_manager(order_id: int, amount: int, run_id: str) -> None:
            token = durable.event_token(run_id, "approved", ttl="2 days")
            mails.append(f"https://shop.example/refunds/decide?token={token}")

        @durable.workflow(name="proj.refund")
        def refund(ctx: Any, order_id: int, amount: int) -> Any:
            ctx.step("ask", ask_manager, order_id, amount, ctx.run_id)
            try:
                decision = ctx.wait_for_event("approved", timeout="2 days")
            except EventTimeoutError:
                return ctx.run(reject_refund, order_id, "no answer within 2 days")
            return ctx.run(pay_refund, order_id) if decision["ok"] else ctx.run(reject_refund, order_id,
                                                                                   decision["why"])

        self.refund = refund


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    shop = Shop(tmp_path)
    yield shop
    shop.durable.close()


def test_the_docs_tests_pass(shop: Shop) -> None:
    outcome = run_eagerly(shop.refund, 42, 30, events=[Event("approved", {"ok": True}, after="3 hours")])
    assert outcome.step_keys == ["ask", "approved", "proj.pay_refund"]
    assert outcome.clock.elapsed == 3 * 3600
    outcome = run_eagerly(shop.refund, 42, 30)
    assert outcome.journal[-1].name == "proj.reject_refund"
    assert outcome.clock.elapsed == 2 * 86400


def test_the_link_continues_the_run_once(shop: Shop) -> None:
    kept = KeptMessages()
    shop.durable.runtime.publisher = kept
    sent = kept.messages
    handle = shop.refund.run(42, 30)
    (link,) = shop.mails
    token = link.split("token=")[1]
    shop.durable.send_event(token=token, payload={"ok": False, "why": "already refunded"})
    with pytest.raises(EventTokenError) as again:
        shop.durable.send_event(token=token, payload={"ok": True, "why": ""})
    assert again.value.reason == "used"
    for message in [message for message in sent if isinstance(message, AdvanceMessage)]:
        advance(shop.durable.runtime, message.run_id, consume=message.outbox_id)
    (dispatch,) = [message for message in sent if isinstance(message, StepMessage)]
    assert (dispatch.task, dispatch.args) == ("proj.reject_refund", [42, "already refunded"])
    assert handle.status == "running"
