"""kill -9 of the worker in the middle of the sample shop's chain: only with ``durable_chains`` does it finish.

The calling code (``Shop.place_order``: ``chain(reserve.s(id), charge.s(), ship.s()).delay()``) is the same in
both runs of the test; only ``app.conf.durable_chains`` differs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.exceptions import TimeoutError as CeleryTimeoutError

from tests.support.shop import build
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("durable_chains", [False, True], ids=["plain-celery", "durable-chains"])
def test_kill_9_mid_chain_only_the_durable_chain_survives(durable_chains: bool, tmp_path: Path) -> None:
    stack = Stack("postgresql", tmp_path)
    stack.env.update(DT_CHAINS="1" if durable_chains else "0", DT_CHARGE_SECONDS="2")
    shop = build(stack.env)
    try:
        first = stack.start_worker(app="tests.support.shop_worker")
        result = shop.place_order(7)
        stack.wait_until(lambda: any(row["label"] == "charge:7" for row in stack.executions_of()), 30,
                         "the charge step to start")
        stack.kill(first)
        stack.start_worker(app="tests.support.shop_worker")
        labels = lambda: [row["label"] for row in stack.executions_of()]  # noqa: E731
        if durable_chains:
            assert result.get(timeout=60) == "order 7 shipped, 42 charged"
            assert labels().count("reserve:7") == 1 and labels().count("ship:7") == 1
            assert 1 <= labels().count("charge:7") <= 2
            charge = next(step for step in result.handle.steps() if step.step_key == "shop.charge")
            assert [attempt.status for attempt in charge.attempts][-2:] == ["lost", "succeeded"]
        else:
            with pytest.raises(CeleryTimeoutError):
                result.get(timeout=8)  # the message of the killed task was acknowledged: the chain is gone
            assert "ship:7" not in labels() and shop.durable.runs() == []
    finally:
        shop.durable.close()
        stack.close()
