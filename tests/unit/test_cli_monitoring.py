"""``durable runs list/show/watch`` on a journal with every kind of step, and their ``--json`` output."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from typing import Any

import pytest
from celery import Celery
from click.testing import CliRunner, Result

from durable_tasks import Durable, RetryPolicy
from durable_tasks.cli import main
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))




@pytest.fixture
def journal(app: Celery, durable: Durable, tasks: dict[str, Any]) -> dict[str, Any]:
    """A sleeping run with an inline step, a patch marker, a task step that failed once, and a sleep;
    a run waiting out a retry backoff; a failed run; a succeeded run."""
    kept = KeptMessages()
    durable.runtime.publisher = kept
    failures = {"charge": 2}

    @durable.step(retry=RetryPolicy(max_attempts=2, initial=3600, jitter=0))
    @app.task(name="shop.charge", shared=False)
    def charge(order: int) -> dict[str, int]:
        if failures["charge"]:
            failures["charge"] -= 1
            raise ConnectionError("gateway down")
        return {"charged": order}

    @durable.workflow(name="shop.checkout")
    def checkout(ctx: Any, order: int) -> Any:
        ctx.step("reserve", lambda: "reserved")
        ctx.patched("new-pricing")
        paid = ctx.run(charge, order)
        ctx.sleep("cool-off", "2h")
        return paid

    @durable.workflow(name="shop.broken")
    def broken(ctx: Any) -> None:
        ctx.step("explode", lambda: 1 / 0)

    @durable.workflow(name="shop.quick")
    def quick(ctx: Any) -> int:
        return int(ctx.step("one", lambda: 1))

    def deliver() -> None:
        message = kept.last_step()
        task = durable.app.tasks[message.task]
        with contextlib.suppress(ConnectionError):
            execute(durable.runtime, task, message, lambda *a, **k: task.run(*a, **k))

    sleeping = checkout.run(42)
    deliver()  # fails: the step waits an hour for its next attempt
    retrying = checkout.run(43)
    deliver()  # fails too
    with durable.store.begin() as conn:
        conn.exec_driver_sql("UPDATE durable_timers SET due_at = due_at - 7200 WHERE run_id = ?", (sleeping.id,))
    durable.timers.fire_due()
    deliver()  # the first run's second attempt succeeds; that run sleeps
    assert sleeping.status == "sleeping" and retrying.status == "running"
    failed = broken.run()
    succeeded = quick.run()
    assert (failed.status, succeeded.status) == ("failed", "succeeded")
    return {"store": durable.settings.store, "sleeping": sleeping.id, "retrying": retrying.id, "failed": failed.id,
            "succeeded": succeeded.id, "durable": durable}


def test_runs_show_is_a_timeline_of_steps_attempts_sleeps_and_errors(journal: dict[str, Any]) -> None:
    result = invoke("runs", "show", journal["sleeping"], "--store", journal["store"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = {key: next(line for line in lines if key in line) for key in
           ("reserve", "new-pricing", "shop.charge", "attempt 1", "attempt 2", "cool-off")}
    assert "inline" in row["reserve"] and "succeeded" in row["reserve"] and "reserved" in row["reserve"]
    assert "marker" in row["new-pricing"] and "follows change new-pricing" in row["new-pricing"]
    assert "failed" in row["attempt 1"] and "ConnectionError: gateway down" in row["attempt 1"]
    assert "succeeded" in row["attempt 2"] and '{"charged": 42}' in row["shop.charge"]
    assert "sleeping" in row["cool-off"] and "sleeps until" in row["cool-off"]
    assert re.search(r"2h00m00s|1h59m5\ds", row["cool-off"]), "about two hours, to the second"

    retrying = invoke("runs", "show", journal["retrying"], "--store", journal["store"]).stdout
    line = next(line for line in retrying.splitlines() if "shop.charge" in line)
    assert "retrying" in line and "next attempt" in line and "(in 59m" in line and "gateway down" in line

    failed = invoke("runs", "show", journal["failed"], "--store", journal["store"]).stdout
    assert "ZeroDivisionError: division by zero" in next(line for line in failed.splitlines() if "explode" in line)


def test_runs_show_json_parses(journal: dict[str, Any]) -> None:
    result = invoke("runs", "show", journal["sleeping"], "--json", "--store", journal["store"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run"]["id"] == journal["sleeping"] and data["run"]["status"] == "sleeping"
    steps = {step["step_key"]: step for step in data["steps"]}
    assert [attempt["status"] for attempt in steps["shop.charge"]["attempts"]] == ["failed", "succeeded"]
    assert steps["shop.charge"]["result"] == {"charged": 42}
    assert steps["cool-off"]["due"].endswith("+00:00") and steps["cool-off"]["due_at"] > time.time() + 3500


def test_runs_list_filters_by_status_workflow_and_since(journal: dict[str, Any]) -> None:
    def listed(*args: str) -> list[dict[str, Any]]:
        result = invoke("runs", "list", "--json", "--store", journal["store"], *args)
        assert result.exit_code == 0, result.output
        runs: list[dict[str, Any]] = json.loads(result.stdout)
        return runs

    assert {run["id"] for run in listed()} == {journal[key] for key in ("sleeping", "retrying", "failed",
                                                                         "succeeded")}
    assert [run["id"] for run in listed("--status", "failed")] == [journal["failed"]]
    assert {run["id"] for run in listed("--workflow", "shop.checkout")} == {journal["sleeping"], journal["retrying"]}
    assert len(listed("--since", "1h")) == 4 and listed("--since", "2999-01-01") == []
    table = invoke("runs", "list", "--since", "2024-05-01T09:30", "--store", journal["store"])
    assert table.exit_code == 0 and journal["failed"] in table.stdout and "4 run(s)" in table.stdout
    bad = invoke("runs", "list", "--since", "last tuesday", "--store", journal["store"])
    assert bad.exit_code == 2 and "neither an age" in bad.stderr


def test_runs_watch_ends_when_the_run_ends(journal: dict[str, Any]) -> None:
    durable: Durable = journal["durable"]

    def finish_later() -> None:
        time.sleep(0.3)
        durable.cancel(journal["sleeping"], "not needed")

    threading.Thread(target=finish_later).start()
    started = time.monotonic()
    result = invoke("runs", "watch", journal["sleeping"], "--interval", "0.05", "--store", journal["store"])
    assert result.exit_code == 1 and time.monotonic() - started < 10
    assert "cancelled" in result.stdout and "cool-off" in result.stdout
    assert result.stderr.startswith("error: Run ") and "not needed" in result.stderr

    done = invoke("runs", "watch", journal["succeeded"], "--store", journal["store"])
    assert done.exit_code == 0 and "1/1" in done.stdout and "succeeded" in done.stdout
    waiting = invoke("runs", "watch", journal["retrying"], "--timeout", "0.2", "--interval", "0.05",
                     "--store", journal["store"])
    assert waiting.exit_code == 3 and "still running" in waiting.stderr
