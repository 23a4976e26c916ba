"""``durable_chains`` on a real worker: the sample shop's unchanged calling code, with and without the setting."""

from __future__ import annotations

import pytest
from celery import states

from tests.support.shop import build
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_the_same_calling_code_runs_with_and_without_the_setting(private_stack: Stack) -> None:
    stack = private_stack
    stack.start_worker(app="tests.support.shop_worker")
    shop = build(stack.env)  # the setting is off
    try:
        plain = shop.place_order(1)
        assert plain.get(timeout=30) == "order 1 shipped, 42 charged"
        assert plain.state == states.SUCCESS and shop.durable.runs() == [], "a plain Celery chain"

        shop.app.conf.durable_chains = True  # the one setting; place_order is unchanged
        durable = shop.place_order(2)
        assert durable.get(timeout=30) == "order 2 shipped, 42 charged"
        assert durable.state == states.SUCCESS and durable.successful() and durable.ready()
        (run,) = shop.durable.runs()
        assert run.id == durable.id and run.label == "shop.reserve → shop.charge → shop.ship"
        assert [step.status for step in durable.handle.steps()] == ["succeeded"] * 3
    finally:
        shop.durable.close()
