"""Durable chain encoding and semantics, run in memory by durable_tasks.testing."""

from __future__ import annotations

from typing import Any

import pytest
from celery import chain, chord, group

from durable_tasks import ConfigurationError, Durable, StepFailedError
from durable_tasks.testing import run_eagerly


def run_chain_eagerly(durable: Durable, *items: Any, args: tuple[Any, ...] = ()) -> Any:
    return run_eagerly(durable.chain(*items), *args)


def test_results_pass_to_the_next_signature_and_si_ignores_them(durable: Durable, tasks: dict[str, Any]) -> None:
    add, echo = tasks["add"], tasks["echo"]
    outcome = run_chain_eagerly(durable, add.s(1), add.s(10), echo.si("fixed"), echo.s(k=1), args=(5,))
    assert outcome.result == {"args": [{"args": ["fixed"], "kwargs": {}}], "kwargs": {"k": 1}}
    assert outcome.step_keys == ["u.add", "u.add#2", "u.echo", "u.echo#2"]


def test_groups_chords_nested_chains_and_sleeps(durable: Durable, tasks: dict[str, Any]) -> None:
    add, echo = tasks["add"], tasks["echo"]
    outcome = run_chain_eagerly(
        durable, add.si(1, 1), chord([add.s(1), add.s(2)], echo.s()), durable.sleep("1 hour"),
        chain(echo.s(), echo.si("end")), group(add.si(0, 1), add.si(0, 2)),
    )
    assert outcome.result == [1, 2]
    assert outcome.slept == [3600]
    assert outcome.journal[3].result == '{"args":[[3,4]],"kwargs":{}}'


@pytest.mark.parametrize(("option", "advice"), [("countdown", "durable.sleep"), ("link", "next signature")])
def test_options_a_durable_chain_cannot_keep_are_refused(
        durable: Durable, tasks: dict[str, Any], option: str, advice: str) -> None:
    with pytest.raises(ConfigurationError, match=advice):
        durable.chain(tasks["add"].s(1, 2).set(**{option: 5}))


def test_a_task_that_is_not_a_durable_step_is_refused_with_the_fix(durable: Durable, tasks: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=r"u.plain.*@durable.step"):
        durable.chain(tasks["plain"].s(1))


def test_empty_chain_and_bad_items_are_refused(durable: Durable) -> None:
    with pytest.raises(ConfigurationError):
        durable.chain()
    with pytest.raises(ConfigurationError):
        durable.chain(42)


def test_eager_runner_journals_inline_steps_and_applies_retry_policies(durable: Durable) -> None:
    from durable_tasks import RetryPolicy

    calls: list[int] = []

    @durable.step(retry=RetryPolicy(max_attempts=3))
    def flaky(value: int) -> int:
        calls.append(value)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return value * 2

    @durable.workflow(name="unit.inline")
    def flow(ctx: Any, value: int) -> int:
        return ctx.step("flaky", flaky, value)

    outcome = run_eagerly(flow, 21)
    assert outcome.result == 42 and len(calls) == 3 and outcome.journal[0].attempt == 3


def test_eager_runner_reports_unserialisable_results_like_a_real_run(durable: Durable) -> None:
    @durable.workflow(name="unit.bad")
    def flow(ctx: Any) -> Any:
        return ctx.step("make", lambda: object())

    with pytest.raises(StepFailedError, match="cannot be encoded as JSON"):
        run_eagerly(flow)
