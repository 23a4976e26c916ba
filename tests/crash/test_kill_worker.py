"""Crash safety, tested by crashing: SIGKILL of real worker processes at chosen and random points."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest

from tests.crash.helpers import assert_journal_never_re_executed
from tests.support.stack import RABBITMQ, REDIS_URL, ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIBRARY_DEFAULTS = {"worker_timeout": 30, "heartbeat_interval": 2, "sweep_interval": 5, "redelivery_after": 60}


def five_step_chain(stack: Stack, slow_third: float = 2.0) -> object:
    t = stack.client.tasks
    return stack.durable.chain(t["mark"].s("one"), t["mark"].s("two"), t["slow"].s(slow_third, "three"),
                               t["mark"].s("four"), t["mark"].s("five"))


@pytest.mark.parametrize(("store", "broker"), [("postgresql", REDIS_URL), ("sqlite", REDIS_URL),
                                               ("postgresql", RABBITMQ)], ids=["postgresql", "sqlite", "rabbitmq"])
def test_sigkill_while_step_three_runs(store: str, broker: str, tmp_path: object) -> None:
    stack = Stack(store, tmp_path, broker=broker)  # type: ignore[arg-type]
    try:
        first = stack.start_worker()
        handle = five_step_chain(stack).start("payload")  # type: ignore[attr-defined]
        stack.wait_until(lambda: (s := stack.step(handle.id, "t.slow")) and s.status == "running", 30,
                         "step 3 to run")
        stack.kill(first)
        stack.start_worker()
        assert handle.result(timeout=60) == "payload"
        counts = stack.execution_counts(handle.id)
        assert counts["t.mark"] == 1 and counts["t.mark#2"] == 1, "steps 1 and 2 ran exactly once"
        assert 1 <= counts["t.slow"] <= 2, "step 3 ran at most twice"
        steps = handle.steps()
        assert [s.step_key for s in steps] == ["t.mark", "t.mark#2", "t.slow", "t.mark#3", "t.mark#4"]
        assert [a.status for a in steps[2].attempts][-2:] == ["lost", "succeeded"]
        assert_journal_never_re_executed(stack, [handle.id])
    finally:
        stack.close()


def test_kill_loop_with_default_recovery_settings(tmp_path: object) -> None:
    """100 runs of a 5-step chain while a prefork worker is killed 3 times at random moments.

    Bound: with the defaults (worker_timeout 30 s, sweep every 5 s) each kill costs at most about
    40 s, so all runs finish within 240 s.
    """
    stack = Stack("postgresql", tmp_path, **LIBRARY_DEFAULTS)  # type: ignore[arg-type]
    rng = random.Random(7)
    try:
        worker = stack.start_worker(pool="prefork", concurrency=2)
        t = stack.client.tasks
        handles = [stack.durable.chain(t["mark"].s("one"), t["mark"].s("two"), t["slow"].s(0.05, "three"),
                                       t["mark"].s("four"), t["mark"].s("five")).start(i) for i in range(100)]
        started = time.monotonic()
        kills = 0
        while kills < 3:
            time.sleep(rng.uniform(0.3, 2.5))
            stack.kill(worker)
            kills += 1
            worker = stack.start_worker(pool="prefork", concurrency=2)
        results = [handle.result(timeout=max(1.0, 240 - (time.monotonic() - started))) for handle in handles]
        elapsed = time.monotonic() - started
        assert results == list(range(100))
        reruns = assert_journal_never_re_executed(stack, [handle.id for handle in handles])
        lost = sum(a.status == "lost" for h in handles for s in h.steps() for a in s.attempts)
        print(f"\nkill loop: 100 runs, {kills} kills, {lost} lost attempts re-dispatched, "
              f"{sum(reruns.values())} step bodies re-executed (killed before journaling), "
              f"all finished in {elapsed:.1f}s")
    finally:
        stack.close()


def test_coordinator_killed_during_an_inline_step_is_taken_over(tmp_path: object) -> None:
    stack = Stack("postgresql", tmp_path)  # type: ignore[arg-type]
    try:
        stack.start_worker()
        code = ("import sys; from tests.support.worker import test_app; "
                "test_app.workflows['inline_slow'].run(1.0); sys.exit(3)")
        coordinator = subprocess.Popen([sys.executable, "-c", code], env=stack.env, cwd=ROOT)
        run = stack.wait_until(lambda: stack.durable.runs(), 30, "the run to start")[0]
        stack.wait_until(lambda: stack.execution_counts(run.id)["b"] == 1, 30, "inline step b to start")
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
        handle = stack.durable.run(run.id)
        assert handle.result(timeout=60) == ["a", "b", "c", "d"]
        counts = stack.execution_counts(run.id)
        assert counts["a"] == 1, "the inline step journaled before the crash did not run again"
        assert counts["b"] == 2 and counts["c"] == 1 and counts["d"] == 1
        b = next(step for step in handle.steps() if step.step_key == "b")
        assert [a.status for a in b.attempts] == ["lost", "succeeded"], "the attempt that died is journaled"
        assert_journal_never_re_executed(stack, [run.id])
    finally:
        stack.close()
