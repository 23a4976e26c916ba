"""``durable demo``: a five-step workflow survives ``kill -9`` of its worker, with no server at all.

The broker is kombu's SQLAlchemy transport on a SQLite file and the journal is another SQLite file, both
in the demo folder. The demo starts a worker, starts a run, kills the worker with SIGKILL while step 3
runs, starts a new worker, and shows that the run finishes without running steps 1 and 2 again. Each
step body appends a line to ``executions.log`` so the count of real executions is visible apart from the
journal.

This module is also the demo's Celery app (``celery -A durable_tasks.demo worker``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.transport import sqlalchemy as sqla_transport

from durable_tasks import Durable
from durable_tasks.vocabulary import StepStatus

DEMO_DIR = Path(os.environ.get("DURABLE_DEMO_DIR", ".durable-demo")).resolve()
STEP_SECONDS = float(os.environ.get("DURABLE_DEMO_STEP_SECONDS", "1.5"))



class DemoTransport(sqla_transport.Transport):  # type: ignore[misc]
    """kombu's SQLAlchemy transport polling every 0.1 s (its option would reach create_engine)."""

    polling_interval = 0.1


app = Celery("durable_demo", broker=f"sqla+sqlite:///{DEMO_DIR / 'broker.sqlite3'}")
app.conf.update(
    broker_transport="durable_tasks.demo:DemoTransport",
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)
durable = Durable(app, store=f"sqlite:///{DEMO_DIR / 'journal.sqlite3'}", worker_timeout=3,
                  heartbeat_interval=0.5, sweep_interval=0.5, redelivery_after=5)


def _executed(step: str) -> None:
    with open(DEMO_DIR / "executions.log", "a") as log:
        log.write(f"{step}\n")
    time.sleep(STEP_SECONDS)


@durable.step
@app.task
def fetch_order(order_id: int) -> dict[str, Any]:
    _executed("fetch_order")
    return {"order_id": order_id, "items": ["book", "lamp"], "total": 42.5}


@durable.step
@app.task
def call_llm(order: dict[str, Any]) -> str:
    """The expensive call that must not run twice."""
    _executed("call_llm")
    return f"Thank you for buying {' and '.join(order['items'])}!"


@durable.step
@app.task
def charge_card(order: dict[str, Any]) -> dict[str, Any]:
    _executed("charge_card")
    return {"charged": order["total"], "receipt": f"R-{order['order_id']}"}


@durable.step
@app.task
def save_order(order: dict[str, Any], payment: dict[str, Any]) -> bool:
    _executed("save_order")
    return True


@durable.step
@app.task
def send_email(order: dict[str, Any], message: str) -> str:
    _executed("send_email")
    return f"mail sent for order {order['order_id']}"


@durable.workflow(name="demo.checkout")
def checkout(ctx: Any, order_id: int) -> dict[str, Any]:
    order = ctx.run(fetch_order, order_id)
    message = ctx.run(call_llm, order)
    payment = ctx.run(charge_card, order)
    ctx.run(save_order, order, payment)
    mail = ctx.run(send_email, order, message)
    return {"payment": payment, "mail": mail}


STEPS = ["fetch_order", "call_llm", "charge_card", "save_order", "send_email"]


def _start_worker(log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DURABLE_DEMO_DIR": str(DEMO_DIR)}
    command = [sys.executable, "-m", "celery", "-A", "durable_tasks.demo", "worker", "--pool=solo",
               "--loglevel=warning", "--without-mingle", "--without-gossip"]
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"demo: timed out after {timeout:.0f}s waiting for {what} (logs in {DEMO_DIR})")


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()


def run_demo(say: Any = print) -> bool:
    """Run the demo end to end; returns True when the run finished with steps 1-2 executed once."""
    from rich.console import Console

    from .cli_render import render_steps

    console = Console(width=None if sys.stdout.isatty() else 160)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("broker.sqlite3", "journal.sqlite3", "executions.log", "worker.log"):
        for path in DEMO_DIR.glob(name + "*"):
            path.unlink()
    durable.upgrade_database()
    log = DEMO_DIR / "worker.log"
    say(f"[1/5] Starting a Celery worker (SQLite broker and journal in {DEMO_DIR})")
    worker = _start_worker(log)
    replacement = None
    try:
        handle = checkout.start(1001)
        say(f"[2/5] Started run {handle.id} of workflow demo.checkout: 5 steps of {STEP_SECONDS}s each")

        def step_three_running() -> bool:
            steps = {step.step_key: step for step in handle.steps()}
            step = steps.get("durable_tasks.demo.charge_card")
            return step is not None and step.status == StepStatus.RUNNING

        _wait_for(step_three_running, 60, "step 3 to start")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        say(f"[3/5] kill -9 of worker pid {worker.pid} while step 3 (charge_card) runs")
        replacement = _start_worker(log)
        say(f"[4/5] Started a new worker (pid {replacement.pid}); it finds the lost step within seconds")
        result = handle.result(timeout=90)
        say(f"[5/5] Run {handle.status}: {result}")
        console.print(render_steps(handle.steps(), title=f"Journal of run {handle.id}"))
        counts = Counter((DEMO_DIR / "executions.log").read_text().split())
        say("Real executions of each step body (from executions.log):")
        for step in STEPS:
            say(f"  {step:<12} {counts[step]}")
        ok = counts["fetch_order"] == 1 and counts["call_llm"] == 1 and all(counts[s] >= 1 for s in STEPS)
        say("Steps 1 and 2 ran exactly once; the run resumed at step 3 after the crash." if ok
            else "Unexpected execution counts: see above.")
        return ok
    finally:
        _stop(worker)
        if replacement is not None:
            _stop(replacement)
