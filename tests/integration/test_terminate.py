"""``durable runs cancel --terminate`` on a real prefork worker: a 30 s step stops within seconds."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from durable_tasks.cli import main
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    """The process runs (a terminated pool process is a zombie until its worker reaps it: that is not alive)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state not in ("Z", "X")


def test_cancel_terminate_stops_a_30s_step_on_a_prefork_worker(private_stack: Stack) -> None:
    stack = private_stack
    worker = stack.start_worker(pool="prefork", concurrency=1)
    t = stack.client.tasks
    handle = stack.durable.chain(t["slow"].s(30, "long"), t["add"].si(1, 1)).start("x")
    (execution,) = stack.wait_until(lambda: [row for row in stack.executions_of(handle.id) if row["label"] == "long"],
                                    30, "the 30 s step to start")
    assert _alive(execution["pid"]) and execution["pid"] != worker.pid, "it runs in a pool process"

    started = time.monotonic()
    store = ["--store", stack.store, *(["--schema", stack.schema] if stack.schema else [])]
    result = CliRunner().invoke(main, ["runs", "cancel", handle.id, "--terminate", "--reason", "order withdrawn",
                                       *store])
    assert result.exit_code == 0, result.output
    assert "their workers terminate them" in result.output
    stack.wait_until(lambda: not _alive(execution["pid"]), 10, "the pool process running the step to end")
    stopped_after = time.monotonic() - started
    assert stopped_after < 10, f"the step stopped {stopped_after:.1f}s after the cancel"

    (step,) = handle.steps()
    assert (step.step_key, step.status) == ("t.slow", "cancelled")
    assert step.error == {"type": "cancelled", "message": "order withdrawn", "terminate": True}
    assert handle.status == "cancelled"
    time.sleep(0.5)
    assert len(handle.steps()) == 1, "nothing ran after the cancellation"

    # The worker goes on with a fresh pool process.
    assert stack.durable.chain(t["add"].s(2, 3)).start().result(timeout=30) == 5
    print(f"\n30 s step terminated {stopped_after:.2f}s after `durable runs cancel --terminate`")
