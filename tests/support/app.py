"""The Celery app, durable steps and workflows every integration and crash test runs.

:func:`build` is called by the test process and, through :mod:`tests.support.worker`, by each worker
subprocess with the same settings, so both sides agree on names. Step bodies append a line per real
execution to the executions file, a witness kept apart from the journal.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from durable_tasks import Durable, EventTimeoutError, RetryPolicy, current_step
from durable_tasks.messages import TaskMessage


@dataclass
class TestApp:
    app: Celery
    durable: Durable
    tasks: dict[str, Any]
    workflows: dict[str, Any]
    flags: Path


def build(*, store: str, broker: str, executions: str, flags: str, schema: str | None = None,
          options: dict[str, Any] | None = None, prefix: str = "", cron: list[dict[str, Any]] | None = None) -> TestApp:
    app = Celery("dt_tests", broker=broker, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Redis: the stack's key prefix. RabbitMQ (a virtual host per stack): a publish returns once the broker
        # has the message, which is when a message of the user's own counts as sent.
        broker_transport_options=({"confirm_publish": True} if broker.startswith("amqp")
                                  else {"global_keyprefix": prefix} if prefix else {}),
        task_default_queue="celery",
        worker_prefetch_multiplier=1,
    )
    durable = Durable(app, store=store, schema=schema, auto_migrate=True, **(options or {}))
    flag_dir = Path(flags)

    def record(label: str) -> None:
        step = current_step()
        line = json.dumps({"run": step.run_id if step else None, "step": step.step_key if step else None,
                           "attempt": step.attempt if step else None, "label": label, "pid": os.getpid(),
                           "at": time.time()})
        with open(executions, "a") as out:
            out.write(line + "\n")

    def flag(name: str) -> bool:
        return (flag_dir / name).exists()

    @durable.step
    @app.task(name="t.add", shared=False)
    def add(x: int, y: int) -> int:
        record("add")
        return x + y

    @durable.step
    @app.task(name="t.double", shared=False)
    def double(x: int) -> int:
        record("double")
        return x * 2

    @durable.step
    @app.task(name="t.echo", shared=False, bind=True)
    def echo(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        record("echo")
        return {"args": list(args), "kwargs": kwargs,
                "queue": (self.request.delivery_info or {}).get("routing_key")}

    @durable.step
    @app.task(name="t.slow", shared=False)
    def slow(value: Any, seconds: float = 1.0, label: str = "slow") -> Any:
        record(label)
        time.sleep(seconds)
        return value

    @durable.step
    @app.task(name="t.mark", shared=False)
    def mark(value: Any, label: str) -> Any:
        """Records ``label`` and passes ``value`` on (chain links in crash tests)."""
        record(label)
        return value

    @durable.step(retry=RetryPolicy(max_attempts=3, backoff="exponential", initial=0.3, jitter=0))
    @app.task(name="t.flaky", shared=False)
    def flaky(key: str, failures: int) -> str:
        """Fails its first ``failures`` executions for ``key``."""
        record(f"flaky:{key}")
        seen = Path(executions).read_text().count(f'"label": "flaky:{key}"')
        if seen <= failures:
            raise ConnectionError(f"outside service down ({seen})")
        return f"ok after {seen}"

    @durable.step(retry=RetryPolicy(max_attempts=2, initial=0.1, jitter=0))
    @app.task(name="t.broken_until_fixed", shared=False)
    def broken_until_fixed(key: str) -> str:
        """Fails while the flag file ``broken-<key>`` exists: removing it is the deployed fix."""
        record(f"broken:{key}")
        if flag(f"broken-{key}"):
            raise ValueError(f"bug in broken_until_fixed for {key}")
        return f"fixed {key}"

    @durable.step
    @app.task(name="t.bad_result", shared=False)
    def bad_result() -> Any:
        record("bad_result")
        return {"when": object()}

    @durable.step
    @app.task(name="t.keys", shared=False)
    def keys() -> dict[str, Any]:
        step = current_step()
        assert step is not None
        return {"idempotency_key": step.idempotency_key, "attempt_key": step.attempt_key,
                "attempt": step.attempt}

    @durable.step
    @app.task(name="t.celery_retry", shared=False, bind=True, max_retries=3, default_retry_delay=0.2)
    def celery_retry(self: Any, key: str) -> str:
        """Uses Celery's own self.retry(); inside a durable run it becomes a durable timer."""
        record(f"celery_retry:{key}")
        seen = Path(executions).read_text().count(f'"label": "celery_retry:{key}"')
        if seen < 3:
            raise self.retry(exc=RuntimeError(f"try {seen}"), countdown=0.2)
        return f"done after {seen}"

    @durable.step
    @app.task(name="t.autoretry", shared=False, autoretry_for=(ConnectionError,), max_retries=2,
              default_retry_delay=0.2)
    def autoretry(key: str) -> str:
        """Keeps Celery's autoretry options: journaled retries in durable runs, Celery's own outside."""
        record(f"autoretry:{key}")
        seen = Path(executions).read_text().count(f'"label": "autoretry:{key}"')
        if seen < 3:
            raise ConnectionError(f"try {seen}")
        return f"done after {seen}"

    @durable.step
    @app.task(name="t.wait_cancel", shared=False)
    def wait_cancel(seconds: float) -> str:
        record("wait_cancel")
        step = current_step()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if step is not None and step.is_cancelled():
                return "noticed cancel"
            time.sleep(0.05)
        return "not cancelled"

    @durable.step(retry=RetryPolicy(max_attempts=2, initial=0.1, jitter=0, timeout=0.5))
    @app.task(name="t.too_slow", shared=False)
    def too_slow(seconds: float) -> str:
        """Exceeds its per-attempt timeout (a Celery soft time limit, enforced by the prefork pool)."""
        record("too_slow")
        time.sleep(seconds)
        return "finished"

    @durable.step
    @app.task(name="t.tick", shared=False)
    def tick(seconds: float = 0.0) -> float | None:
        """Records ``tick:<schedule>:<nominal tick>`` from its context, then works for ``seconds``."""
        step = current_step()
        scheduled = step.tick if step else None
        record(f"tick:{scheduled.schedule}:{scheduled.scheduled_for.timestamp()!r}" if scheduled else "tick:none")
        time.sleep(seconds)
        return scheduled.scheduled_for.timestamp() if scheduled else None

    @app.task(name="t.plain", shared=False)
    def plain(x: int) -> int:
        record("plain")
        return x

    @app.task(name="t.receive", shared=False, bind=True)
    def receive(self: Any, *args: Any) -> None:
        """A consumer of the runs' own messages (a plain task): records each delivery with its message id."""
        line = json.dumps({"run": None, "step": None, "label": "receive", "id": self.request.id, "args": list(args),
                           "pid": os.getpid(), "at": time.time()})
        with open(executions, "a") as out:
            out.write(line + "\n")

    @durable.step
    @app.task(name="t.sender", shared=False)
    def sender(value: Any) -> Any:
        """Sends a message with its result; its first attempt dies right after sending while ``die-in-body`` is set."""
        step = current_step()
        assert step is not None
        record("sender")
        step.send_task(receive, "from-step", step.attempt)
        if flag("die-in-body") and step.attempt == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return value

    def summarise(value: Any) -> dict[str, Any]:
        record("summarise")
        return {"summary": value}

    @durable.workflow(name="wf.basic")
    def basic(ctx: Any, n: int) -> dict[str, Any]:
        a = ctx.run(add, n, 1)
        b = ctx.step("summarise", summarise, a)
        c = ctx.gather(ctx.run_async(double, a), ctx.run_async(add, a, 100))
        ctx.sleep("nap", 0.3)
        return {"a": a, "b": b, "c": c}

    @durable.workflow(name="wf.nap")
    def nap(ctx: Any, seconds: float, pause: float) -> list[Any]:
        """Runs a step, sleeps, runs another step (each phase long enough to be watched)."""
        first = ctx.run(slow, "first", seconds, "nap-first")
        ctx.sleep("nap", pause)
        second = ctx.run(slow, "second", seconds, "nap-second")
        return [first, second]

    @durable.workflow(name="wf.flaky")
    def flaky_flow(ctx: Any, key: str, failures: int) -> dict[str, Any]:
        first = ctx.run(mark, 1, f"before:{key}")
        second = ctx.run(flaky, key, failures)
        return {"first": first, "second": second}

    @durable.workflow(name="wf.fixable")
    def fixable(ctx: Any, key: str) -> list[Any]:
        first = ctx.run(mark, "one", f"fix-before:{key}")
        second = ctx.run(broken_until_fixed, key)
        third = ctx.run(mark, "three", f"fix-after:{key}")
        return [first, second, third]

    @durable.workflow(name="wf.versioned")
    def versioned(ctx: Any, key: str) -> str:
        if flag(f"v2-{key}"):  # the deployed code swapped the order of the two steps
            ctx.run(add, 1, 1)
            ctx.run(slow, "x", 1.5, f"versioned:{key}")
        else:
            ctx.run(slow, "x", 1.5, f"versioned:{key}")
            ctx.run(add, 1, 1)
        return "done"

    @durable.workflow(name="wf.patched")
    def patched(ctx: Any, key: str) -> list[str]:
        seen = [ctx.run(mark, "first", f"patched:{key}")]
        if flag(f"v2-{key}") and ctx.patched("add-double"):  # the deployed change, guarded
            seen.append(str(ctx.run(double, 21)))
        seen.append(str(ctx.run(add, 1, 1)))
        seen.append(ctx.run(slow, "last", 1.5, f"patched-slow:{key}"))
        return seen

    @durable.workflow(name="wf.unknown_task")
    def unknown_task(ctx: Any) -> Any:
        return ctx.run("t.no_such_task", 1)

    @durable.workflow(name="wf.single")
    def single(ctx: Any, name: str, *args: Any) -> Any:
        return ctx.run(name, *args)

    def slow_inline(label: str, seconds: float) -> str:
        record(label)
        time.sleep(seconds)
        return label

    @durable.workflow(name="wf.inline_slow")
    def inline_slow(ctx: Any, seconds: float) -> list[str]:
        return [ctx.step(name, slow_inline, name, seconds) for name in ("a", "b", "c", "d")]

    @durable.workflow(name="wf.oversized")
    def oversized(ctx: Any) -> Any:
        big = ctx.step("make", lambda: "x" * 600_000)
        return ctx.run(echo, big, big)

    @durable.workflow(name="wf.caught")
    def caught(ctx: Any) -> str:
        try:
            ctx.run(bad_result)
        except Exception as exc:  # StepFailedError: the workflow compensates
            return f"handled {type(exc).__name__}"
        return "unreachable"

    @durable.workflow(name="wf.approval")
    def approval(ctx: Any, order: str, timeout: float) -> dict[str, Any]:
        """Prepares an order (a task step), waits for a person's approval, ships or cancels."""
        ctx.run(mark, order, f"prepare:{order}")
        try:
            decision = ctx.wait_for_event("approved", timeout, key=f"order-{order}")
        except EventTimeoutError:
            return {"order": order, "outcome": "cancelled", "decided_at": ctx.step("decided", time.time)}
        shipped = ctx.run(mark, order, f"ship:{order}")
        return {"order": order, "outcome": "shipped", "by": decision, "shipped": shipped}

    @durable.workflow(name="wf.sleep_then_add")
    def sleep_then_add(ctx: Any, seconds: float, n: int) -> int:
        """Sleeps, then runs a task step (its executions count the wake-ups that got through)."""
        ctx.sleep("wait", seconds)
        return int(ctx.run(add, n, 1))

    @durable.step
    @app.task(name="t.publisher", shared=False)
    def publisher(topic: str, value: Any) -> Any:
        """Publishes a Kafka record with its result."""
        step = current_step()
        assert step is not None
        return step.publish(topic, {"from": "step", "value": value}, key="step")

    @durable.workflow(name="wf.publish")
    def publish(ctx: Any, topic: str, value: Any) -> list[Any]:
        """A Kafka record of the workflow's own, then a step that publishes one with its result."""
        return [ctx.publish(topic, {"from": "workflow", "value": value}, key="workflow"),
                ctx.run(publisher, topic, value)]

    @durable.workflow(name="wf.messages")
    def messages(ctx: Any, value: Any) -> Any:
        """A message of the workflow's own, then a step that sends one with its result."""
        ctx.send_task(receive, "from-workflow", value)
        return ctx.run(sender, value)

    @durable.workflow(name="wf.sleep_until")
    def sleep_until(ctx: Any, epoch: float) -> float:
        """Sleeps until the epoch time ``epoch``; returns when it woke (journaled)."""
        from datetime import UTC, datetime

        ctx.sleep_until("alarm", datetime.fromtimestamp(epoch, UTC))
        return float(ctx.step("woke", time.time))

    @durable.workflow(name="wf.parcel")
    def parcel(ctx: Any, n: int, seconds: float, pause: float = 0.0) -> Any:
        """A child run: a durable sleep of ``pause`` (if any), then one slow step recorded as ``parcel:<n>``."""
        if pause:
            ctx.sleep("pause", pause)
        return ctx.run(slow, n, seconds, f"parcel:{n}")

    @durable.workflow(name="wf.parcels")
    def parcels(ctx: Any, count: int, seconds: float, pause: float = 0.0) -> list[Any]:
        """A parent run: ``count`` children in parallel, then a last step of its own."""
        shipped = ctx.gather(*(ctx.start_child(parcel, n, seconds, pause) for n in range(count)))
        return [*shipped, ctx.run(mark, "all shipped", "parcels:done")]

    durable.runtime.publisher = _DiesBeforeSending(durable.runtime.publisher, flag_dir)
    tasks = {name: value for name, value in locals().items() if hasattr(value, "apply_async")}
    workflows = {name: value for name, value in locals().items() if hasattr(value, "fingerprint")}
    for declared in cron or ():  # schedules of the stack: {"task": "tick", "name": ..., "every": ..., ...}
        options = dict(declared)
        durable.cron(options.pop("cron", None), **{k: v for k, v in options.items() if k != "task"})(
            tasks[options["task"]])
    return TestApp(app, durable, tasks, workflows, flag_dir)


class _DiesBeforeSending:
    """The publisher, with a test-only crash point: while the flag file ``die-before-send`` exists, the process
    kills itself (``kill -9``) when it is about to send a message of the user's own whose id ends with the
    flag's text, after that message's commit. The flag is removed first, so the next process sends it."""

    def __init__(self, publisher: Any, flags: Path) -> None:
        self._publisher = publisher
        self._flag = flags / "die-before-send"

    def publish(self, message: Any) -> None:
        if isinstance(message, TaskMessage) and self._flag.exists() \
                and message.id.endswith(self._flag.read_text().strip()):
            self._flag.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        self._publisher.publish(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._publisher, name)


def build_from_env() -> TestApp:
    return build(
        store=os.environ["DT_STORE"], broker=os.environ["DT_BROKER"], executions=os.environ["DT_EXECUTIONS"],
        flags=os.environ["DT_FLAGS"], schema=os.environ.get("DT_SCHEMA") or None,
        options=json.loads(os.environ.get("DT_OPTIONS", "{}")), prefix=os.environ.get("DT_PREFIX", ""),
        cron=json.loads(os.environ.get("DT_CRON", "[]")),
    )
