"""``durable_chains``: Celery's own chains of an app become durable runs, with the calling code unchanged.

The calling code below is the same with and without the setting; only what happens differs. Messages are kept by
a publisher that plays the broker (no worker): see tests/support/engine.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from celery import Celery, chain, group, states
from celery.exceptions import TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

from durable_tasks import ConfigurationError, Durable, ResultTimeoutError
from durable_tasks.celery_chains import DurableAsyncResult
from tests.support.engine import pump
from tests.support.publisher import KeptMessages


@pytest.fixture
def broker(durable: Durable) -> KeptMessages:
    kept = KeptMessages()
    durable.runtime.publisher = kept
    return kept


@pytest.fixture
def shop(app: Celery, durable: Durable, tasks: dict[str, Any]) -> dict[str, Any]:
    @durable.step
    @app.task(name="u.lookup", shared=False)
    def lookup(key: str) -> str:
        raise LookupError(f"no order {key}")

    return {**tasks, "lookup": lookup}


def celery_result(result: Any) -> bool:
    """Celery's own result of a chain it sent (the app's AsyncResult class), not a durable run's."""
    return isinstance(result, AsyncResult) and not isinstance(result, DurableAsyncResult)


def place_order(shop: dict[str, Any]) -> AsyncResult:
    """The calling code of an existing app: it never names durable-tasks."""
    return chain(shop["add"].s(1, 2), shop["add"].s(3), shop["add"].s(4)).delay()


def test_without_the_setting_a_chain_stays_a_celery_chain(durable: Durable, broker: KeptMessages,
                                                          shop: dict[str, Any]) -> None:
    result = place_order(shop)
    assert celery_result(result) and durable.runs() == []
    assert broker.messages == [], "Celery sent it, not durable-tasks"


def test_with_the_setting_the_same_call_starts_a_durable_run(app: Celery, durable: Durable, broker: KeptMessages,
                                                             shop: dict[str, Any]) -> None:
    app.conf.durable_chains = True  # set after Durable(app): read at each start
    result = place_order(shop)
    assert isinstance(result, AsyncResult) and isinstance(result, DurableAsyncResult)
    (run,) = durable.runs()
    assert result.id == run.id and run.label == "u.add → u.add → u.add"
    assert result.state == states.STARTED and not result.ready(), "its first step was dispatched at once"
    pump(durable, broker)
    assert result.get(timeout=1) == 10
    assert (result.state, result.status, result.result, result.info) == (states.SUCCESS, states.SUCCESS, 10, 10)
    assert result.ready() and result.successful() and not result.failed()
    assert result.date_done is not None and result.name == run.label
    assert [step.step_key for step in result.handle.steps()] == ["u.add", "u.add#2", "u.add#3"]


@pytest.mark.parametrize("start", [
    lambda s: (s["add"].s(1, 2) | s["add"].s(3)).delay(),
    lambda s: chain(s["add"].s(2), s["add"].s(3)).apply_async((1,)),
    lambda s: chain(s["add"].s(1, 2), s["add"].s(3))(),
    lambda s: chain([s["add"].s(1, 2), s["add"].s(3)]).apply_async(),
])
def test_every_way_of_starting_a_chain_is_covered(app: Celery, durable: Durable, broker: KeptMessages,
                                                  shop: dict[str, Any], start: Any) -> None:
    app.conf.durable_chains = True
    result = start(shop)
    pump(durable, broker)
    assert isinstance(result, DurableAsyncResult) and result.get(timeout=1) == 6


def test_a_failed_step_raises_its_own_exception_type_like_celery(app: Celery, durable: Durable,
                                                                 broker: KeptMessages, shop: dict[str, Any]) -> None:
    app.conf.durable_chains = True
    result = chain(shop["echo"].s("a"), shop["lookup"].si("42")).delay()
    pump(durable, broker)
    with pytest.raises(LookupError, match="no order 42"):
        result.get(timeout=1)
    assert result.state == states.FAILURE and result.failed() and isinstance(result.result, LookupError)
    assert result.get(propagate=False).args == ("no order 42",)


def test_a_chain_with_a_task_that_is_not_a_durable_step_is_refused(app: Celery, durable: Durable,
                                                                   shop: dict[str, Any]) -> None:
    app.conf.durable_chains = True
    with pytest.raises(ConfigurationError, match=r"Task 'u.plain' is not a durable step.*durable=False"):
        chain(shop["add"].s(1, 2), shop["plain"].s()).delay()
    assert durable.runs() == []


def test_one_chain_can_stay_a_plain_celery_chain(app: Celery, durable: Durable, broker: KeptMessages,
                                                 shop: dict[str, Any]) -> None:
    app.conf.durable_chains = True
    assert celery_result(chain(shop["add"].s(1, 2), shop["plain"].s()).apply_async(durable=False))
    assert celery_result(chain(shop["add"].s(1, 2), shop["plain"].s()).set(durable=False).delay())
    assert durable.runs() == [] and broker.messages == []


def test_chains_inside_a_larger_canvas_and_eager_mode_keep_celery_behaviour(
        app: Celery, durable: Durable, broker: KeptMessages, shop: dict[str, Any]) -> None:
    app.conf.durable_chains = True
    group(chain(shop["add"].s(1, 2), shop["add"].s(3)), chain(shop["add"].s(5, 6), shop["add"].s(7))).apply_async()
    frozen = chain(shop["add"].s(1, 2), shop["add"].s(3))
    frozen.freeze()
    assert celery_result(frozen.delay()), "someone may wait on the ids it was frozen with"
    assert durable.runs() == []
    app.conf.task_always_eager = True
    assert place_order(shop).get() == 10
    assert durable.runs() == []


def test_the_setting_as_an_argument_and_other_apps_untouched(tmp_path: Any) -> None:
    ours = Celery("ours", broker="memory://", set_as_current=False)
    theirs = Celery("theirs", broker="memory://", set_as_current=False)
    durable = Durable(ours, store=f"sqlite:///{tmp_path / 'j.sqlite3'}", chains=True)
    try:
        durable.runtime.publisher = KeptMessages()
        def add(x: int, y: int) -> int:
            return x + y

        ours_add = durable.step(ours.task(name="o.add", shared=False)(add))
        theirs_add = theirs.task(name="t.add", shared=False)(add)
        assert isinstance(chain(ours_add.s(1, 1), ours_add.s(1)).delay(), DurableAsyncResult)
        assert celery_result(chain(theirs_add.s(1, 1), theirs_add.s(1)).delay())
    finally:
        durable.close()


def test_countdown_becomes_a_durable_sleep_and_routing_goes_to_the_first_task(
        app: Celery, durable: Durable, broker: KeptMessages, shop: dict[str, Any]) -> None:
    app.conf.durable_chains = True
    result = chain(shop["add"].s(1, 2), shop["add"].s(3)).apply_async(countdown=3600, queue="orders")
    steps = result.handle.steps()
    assert [(step.step_key, step.kind, step.status) for step in steps] == [("sleep", "sleep", "sleeping")]
    assert steps[0].due_at is not None and 3590 < steps[0].due_at - steps[0].created_at <= 3600
    with pytest.raises(ConfigurationError, match="link_error"):
        chain(shop["add"].s(1, 2)).apply_async(link_error=shop["echo"].s())


def test_revoke_cancels_the_run_and_get_raises_task_revoked(app: Celery, durable: Durable, broker: KeptMessages,
                                                            shop: dict[str, Any]) -> None:
    app.conf.durable_chains = True
    result = place_order(shop)
    result.revoke(terminate=True)
    assert result.state == states.REVOKED and result.ready()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)
    result.revoke()  # a finished run: nothing to do, as with Celery


def test_a_result_can_be_found_again_by_id_and_times_out_like_celery(
        app: Celery, durable: Durable, broker: KeptMessages, shop: dict[str, Any]) -> None:
    app.conf.durable_chains = True
    result = place_order(shop)
    again = DurableAsyncResult(result.id, app=app)
    assert again == result and again.exists() and not DurableAsyncResult("no-such-run", app=app).exists()
    assert isinstance(copy.copy(result), DurableAsyncResult) and copy.copy(result).state == states.STARTED
    with pytest.raises(CeleryTimeoutError) as waited:
        again.get(timeout=0.05)
    assert isinstance(waited.value, ResultTimeoutError)
