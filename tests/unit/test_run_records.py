"""What a run and its steps say about themselves: idempotency, current errors, labels, forks, due times,
replay divergence, and the processes behind them (the defects a new user hit)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from click.testing import CliRunner

from durable_tasks import Durable, IdempotencyConflictError, RetryPolicy, RunStatus
from durable_tasks.cli import main
from durable_tasks.cli_render import worker_state
from durable_tasks.store import health_queries, queries
from durable_tasks.timers import DatabaseTimers


def replay(durable: Durable, run_id: str) -> None:
    from durable_tasks import coordinator

    coordinator.advance(durable.runtime, run_id)


# --- idempotency keys --------------------------------------------------------------------------------------


def test_the_same_key_and_input_return_the_same_run(durable: Durable, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.pipeline")
    def pipeline(ctx: Any, n: int, *, label: str = "") -> int:
        return n

    first = pipeline.start(1, label="a", idempotency_key="idem-A")
    assert pipeline.start(1, label="a", idempotency_key="idem-A").id == first.id
    assert durable.start("unit.pipeline", 1, idempotency_key="idem-A", label="a").id == first.id


def test_a_key_reused_for_another_workflow_or_input_is_a_conflict_naming_the_run(
        durable: Durable, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.pipeline")
    def pipeline(ctx: Any, n: int) -> int:
        return n

    @durable.workflow(name="unit.fragile")
    def fragile(ctx: Any, n: int) -> int:
        return n

    first = pipeline.start(9, idempotency_key="idem-A")
    with pytest.raises(IdempotencyConflictError, match=f"run {first.id} of workflow 'unit.pipeline'") as other:
        fragile.start(9, idempotency_key="idem-A")
    assert other.value.run_id == first.id and "different workflow" in str(other.value)
    with pytest.raises(IdempotencyConflictError, match="different input"):
        pipeline.start(10, idempotency_key="idem-A")
    assert len(durable.runs()) == 1, "nothing was written for the refused starts"


def test_chains_keep_their_keys_too(durable: Durable, tasks: dict[str, Any]) -> None:
    add = tasks["add"]
    first = durable.chain(add.s(1, 2)).start(idempotency_key="chain-1")
    assert durable.chain(add.s(1, 2)).start(idempotency_key="chain-1").id == first.id
    with pytest.raises(IdempotencyConflictError, match="different input"):
        durable.chain(add.s(5, 2)).start(idempotency_key="chain-1")


# --- a step's error is its current error --------------------------------------------------------------------


def test_a_step_that_failed_then_succeeded_shows_no_error(durable: Durable) -> None:
    calls = {"n": 0}

    @durable.step(retry=RetryPolicy(max_attempts=3, initial=0, jitter=0))
    def charge() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError(f"payment gateway unreachable (call {calls['n']})")
        return "charged"

    @durable.workflow(name="unit.charge")
    def flow(ctx: Any) -> str:
        return ctx.step("charge", charge)

    handle = flow.run()
    timers = DatabaseTimers(durable.runtime)
    for _ in range(5):
        timers.fire_due()
        replay(durable, handle.id)
    (step,) = handle.steps()
    assert (step.status, step.result, step.error) == ("succeeded", "charged", None)
    assert [attempt.status for attempt in step.attempts] == ["failed", "failed", "succeeded"]
    assert step.attempts[1].error_message == "payment gateway unreachable (call 2)"
    output = CliRunner().invoke(main, ["--store", durable.settings.store, "runs", "show", handle.id]).stdout
    (step_line,) = [line for line in output.splitlines() if "│ charge " in line]
    assert "charged" in step_line and "unreachable" not in step_line, "the step shows its result, not an old error"


# --- labels, forks and due times -----------------------------------------------------------------------------


def test_a_chain_is_listed_under_its_tasks_with_its_first_tasks_arguments(
        durable: Durable, tasks: dict[str, Any]) -> None:
    add, echo = tasks["add"], tasks["echo"]
    handle = durable.chain(add.s(2), echo.s(), durable.sleep("1h")).start(40)
    info = handle.info()
    assert info.workflow == "durable_tasks.chain", "workers still find the code by the registry name"
    assert info.label == info.name == "u.add → u.echo → sleep 3600s"
    assert (info.args, info.kwargs) == ([40, 2], {})
    named = durable.chain(add.s(1, 1), name="nightly-sums").start()
    assert named.info().name == "nightly-sums"
    listing = CliRunner().invoke(main, ["--store", durable.settings.store, "runs", "list"]).stdout
    assert "u.add → u.echo → sleep 3600s" in listing and "nightly-sums" in listing


def test_a_fork_names_the_run_it_came_from(durable: Durable, tasks: dict[str, Any]) -> None:
    @durable.workflow(name="unit.two")
    def two(ctx: Any) -> int:
        return ctx.step("one", lambda: 1) + ctx.step("two", lambda: 2)

    original = two.run()
    fork = durable.fork(original.id, "two")
    assert fork.info().forked_from == original.id
    shown = CliRunner().invoke(main, ["--store", durable.settings.store, "runs", "show", fork.id]).stdout
    assert "forked from" in shown and original.id in shown


def test_retrying_and_sleeping_steps_say_when_they_go_on(durable: Durable) -> None:
    @durable.step(retry=RetryPolicy(max_attempts=2, initial="1h", jitter=0))
    def down() -> None:
        raise ConnectionError("down")

    @durable.workflow(name="unit.waits")
    def waits(ctx: Any) -> None:
        ctx.sleep("nap", "2h")

    @durable.workflow(name="unit.retries")
    def retries(ctx: Any) -> None:
        ctx.step("down", down)

    before = time.time()
    (nap,) = waits.run().steps()
    (retrying,) = retries.run().steps()
    assert nap.status == "sleeping" and before + 7200 <= nap.due_at <= time.time() + 7200
    assert retrying.status == "retrying" and before + 3600 <= retrying.due_at <= time.time() + 3600


def test_prune_dry_run_lists_and_keeps(durable: Durable) -> None:
    @durable.workflow(name="unit.quick")
    def quick(ctx: Any) -> int:
        return 1

    done = quick.run()
    runner = CliRunner()
    store = ["--store", durable.settings.store]
    dry = runner.invoke(main, [*store, "runs", "prune", "--older-than", "0s", "--dry-run"])
    assert dry.exit_code == 0 and done.id in dry.stdout and "Would delete 1 finished run(s)" in dry.stdout
    assert durable.run(done.id).status == RunStatus.SUCCEEDED
    real = runner.invoke(main, [*store, "runs", "prune", "--older-than", "0s"])
    assert "Deleted 1" in real.stdout and durable.runs() == []


# --- replay divergence --------------------------------------------------------------------------------------


def test_a_workflow_that_rolls_dice_is_told_so_not_blamed_on_a_code_change(durable: Durable) -> None:
    @durable.workflow(name="unit.dice")
    def dice(ctx: Any) -> Any:
        if random.random() < 0.5:
            return ctx.step("heads", lambda: "h")
        return ctx.step("tails", lambda: "t")

    seen = set()
    for _ in range(40):  # a replay of a run that took the other branch the first time
        handle = dice.run()
        with durable.store.begin() as conn:
            queries.update_run(conn, handle.id, status=RunStatus.RUNNING)
        replay(durable, handle.id)
        info = handle.info()
        seen.add(info.status)
        if info.status == "failed":
            message = info.error["message"]
            assert "took a different path on replay" in message
            assert all(cause in message for cause in ("code changed", "randomness", "the clock", "outside read"))
            assert "ctx.step(" in message
            break
    assert "failed" in seen


# --- processes ----------------------------------------------------------------------------------------------


def test_processes_show_their_role_and_a_clean_stop(durable: Durable, tmp_path: Any) -> None:
    identity = durable.runtime.identity
    worker_id = identity.start()
    with durable.store.read() as conn:
        (row,) = [row for row in health_queries.list_workers(conn) if row.id == worker_id]
    assert (row.role, row.timeout, row.heartbeat_interval) == ("client", 30.0, 2.0)
    assert worker_state(row, time.time(), default_timeout=999) == "live"
    assert worker_state(row, row.heartbeat_at + 10, default_timeout=999) == "late", "two beats missed"
    assert worker_state(row, row.heartbeat_at + 31, default_timeout=999) == "dead", "its own timeout, not 999"
    identity.stop()
    with durable.store.read() as conn:
        (row,) = [row for row in health_queries.list_workers(conn) if row.id == worker_id]
        assert row.stopped_at is not None and worker_state(row, time.time(), 30) == "stopped"
        assert worker_id not in health_queries.live_workers(conn, 0), "the sweeper recovers its steps at once"
    listing = CliRunner().invoke(main, ["--store", durable.settings.store, "workers"]).stdout
    assert "client" in listing and "stopped" in listing


# --- many runs at once -------------------------------------------------------------------------------------


def test_bulk_resume_and_cancel_by_filter(durable: Durable) -> None:
    broken = {"on": True}

    def step() -> str:
        if broken["on"]:
            raise KeyError("[missing] key")
        return "ok"

    @durable.workflow(name="unit.bulk")
    def bulk(ctx: Any, n: int) -> str:
        return ctx.step("step", step)

    @durable.workflow(name="unit.other")
    def other(ctx: Any) -> str:
        raise ValueError("another failure")

    failed = [bulk.run(n) for n in range(12)]
    unrelated = other.run()
    store = ["--store", durable.settings.store]
    runner = CliRunner()
    dry = runner.invoke(main, ["runs", "resume", "--error-type", "KeyError", "--since", "1h", "--dry-run", *store])
    assert dry.exit_code == 0 and "Would resume 12 run(s)." in dry.stdout
    assert all(handle.status == "failed" for handle in failed)
    refused = runner.invoke(main, ["runs", "resume", "--workflow", "unit.bulk", *store], input="n\n")
    assert refused.exit_code == 1 and "Resume 12 run(s)?" in refused.stderr, "more than 10 runs: it asks first"
    broken["on"] = False
    done = runner.invoke(main, ["runs", "resume", "--workflow", "unit.bulk", "--yes", *store])
    assert done.exit_code == 0 and "Resumed 12 of 12 run(s)." in done.stdout
    assert all(handle.status == "running" for handle in failed), "each resumed in its own transaction"
    assert unrelated.status == "failed"
    assert [run.id for run in durable.runs(error_type="ValueError")] == [unrelated.id]
    assert [run.id for run in durable.runs(error_type="builtins.ValueError", workflow="unit.other")] == [unrelated.id]
    cancelled = runner.invoke(main, ["runs", "cancel", "--workflow", "unit.other", "--status", "failed", *store])
    assert cancelled.exit_code == 0 and "Cancelled 1 of 1 run(s)." in cancelled.stdout
    assert unrelated.status == "cancelled"
    both = runner.invoke(main, ["runs", "cancel", unrelated.id, "--workflow", "x", *store])
    assert both.exit_code == 2 and "not both" in both.stderr
    nothing = runner.invoke(main, ["runs", "resume", *store])
    assert nothing.exit_code == 2 and "Name a run id" in nothing.stderr


# --- retention ----------------------------------------------------------------------------------------------


def test_retention_deletes_expired_rows_in_batches_and_keeps_what_a_pending_step_needs(
        app: Any, tmp_path: Any) -> None:
    from durable_tasks.retention import RetentionReport, prune_expired

    durable = Durable(app, store=f"sqlite:///{tmp_path / 'retention.sqlite3'}", retain_finished_runs="1d",
                      retain_fired_timers="1h", retain_attempts="1d", retention_batch=2)
    try:
        calls = {"n": 0}

        @durable.step(retry=RetryPolicy(max_attempts=3, initial=0, jitter=0))
        def flaky() -> str:
            calls["n"] += 1
            if calls["n"] % 2:
                raise ConnectionError("once")
            return "ok"

        @durable.workflow(name="unit.kept")
        def kept(ctx: Any) -> str:
            ctx.sleep("nap", 0.01)
            return ctx.step("flaky", flaky)

        handles = [kept.run() for _ in range(3)]
        time.sleep(0.02)
        timers = DatabaseTimers(durable.runtime)
        for _ in range(4):
            timers.fire_due()
            for handle in handles:
                replay(durable, handle.id)
        assert all(handle.status == "succeeded" for handle in handles)
        waiting = kept.run()  # a retrying step whose attempts must survive (they are its retry budget)
        time.sleep(0.02)
        timers.fire_due()
        replay(durable, waiting.id)
        assert waiting.steps()[1].status == "retrying"
        assert prune_expired(durable.runtime).runs == 0, "nothing is old enough yet"
        with durable.store.begin() as conn:  # two days pass
            for table, column in (("durable_runs", "finished_at"), ("durable_timers", "fired_at"),
                                  ("durable_attempts", "started_at")):
                conn.exec_driver_sql(f"UPDATE {table} SET {column} = {column} - 2 * 86400 WHERE {column} IS NOT NULL")
        first = prune_expired(durable.runtime)
        assert (first.runs, first.timers, first.attempts) == (2, 2, 2), "one batch of each per pass"
        while prune_expired(durable.runtime) != RetentionReport():
            pass
        assert [run.id for run in durable.runs()] == [waiting.id]
        assert [a.status for a in waiting.steps()[1].attempts] == ["failed"], "a pending step keeps its attempts"
        with durable.store.read() as conn:
            pending = conn.exec_driver_sql("SELECT count(*), count(fired_at) FROM durable_timers").one()
        assert tuple(pending) == (1, 0), "only the pending retry timer is left"
    finally:
        durable.close()


def test_retention_can_be_switched_off(app: Any, tmp_path: Any) -> None:
    from durable_tasks.retention import prune_expired

    durable = Durable(app, store=f"sqlite:///{tmp_path / 'off.sqlite3'}", retention=False, retain_finished_runs=0)
    try:
        assert durable.settings.retain_finished_runs == 0 and prune_expired(durable.runtime).runs == 0
    finally:
        durable.close()
