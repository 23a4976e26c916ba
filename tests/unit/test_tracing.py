"""Spans of runs and step attempts, exported to the OpenTelemetry SDK's in-memory exporter.

The engine runs on SQLite without a broker; step messages are delivered by hand, as a worker in another
process would get them (their ``durable`` header carries the run's trace context).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from durable_tasks import Durable, RetryPolicy
from durable_tasks.messages import StepMessage
from durable_tasks.outbox import relay
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process; the proxy tracers follow it from then on.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(_PROVIDER)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()




def deliver(durable: Durable, message: StepMessage) -> Any:
    # The message as the worker reads it back from its headers (what crosses the process boundary).
    received = StepMessage.from_headers(message.to_headers()["durable"], task=message.task, task_id=message.task_id,
                                        args=message.args, kwargs=message.kwargs)
    task = durable.app.tasks[message.task]
    return execute(durable.runtime, task, received, lambda *a, **k: task.run(*a, **k))


def test_step_attempts_are_children_of_the_run_span_which_joins_the_callers_trace(
        app: Celery, durable: Durable, tasks: dict[str, Any], spans: InMemorySpanExporter) -> None:
    kept = KeptMessages()
    durable.runtime.publisher = kept
    failures = {"left": 1}

    @durable.step(retry=RetryPolicy(max_attempts=2, initial=0.01, jitter=0))
    @app.task(name="u.flaky_once", shared=False)
    def flaky_once() -> str:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("try again")
        return "ok"

    @durable.workflow(name="unit.traced")
    def traced(ctx: Any, n: int) -> list[Any]:
        summed = ctx.step("sum", lambda: n + 1)
        return [summed, ctx.run(tasks["add"], summed, 1), ctx.run(flaky_once)]

    tracer = trace.get_tracer("caller")
    with tracer.start_as_current_span("POST /orders") as request_span:
        handle = traced.run(1)  # the inline step runs here, in the caller's process
    deliver(durable, kept.steps()[-1])
    with pytest.raises(ConnectionError):
        deliver(durable, kept.steps()[-1])
    with durable.store.begin() as conn:  # the backoff is over
        conn.exec_driver_sql("UPDATE durable_timers SET due_at = due_at - 3600")
    assert durable.timers.fire_due() == 1
    deliver(durable, kept.steps()[-1])
    assert handle.result(timeout=1) == [2, 3, "ok"]

    by_name: dict[str, list[Any]] = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    (run_span,) = by_name["durable.run unit.traced"]
    assert run_span.parent.span_id == request_span.get_span_context().span_id, "the run joins the caller's trace"
    assert run_span.attributes["durable.run_id"] == handle.id
    steps = by_name["durable.step sum"] + by_name["durable.step u.add"] + by_name["durable.step u.flaky_once"]
    assert len(steps) == 4, "one span per attempt: sum, add, and flaky_once twice"
    for span in steps:
        assert span.parent.span_id == run_span.context.span_id
        assert span.context.trace_id == run_span.context.trace_id
        assert span.attributes["durable.run_id"] == handle.id
    failed, succeeded = by_name["durable.step u.flaky_once"]
    assert (failed.attributes["durable.attempt"], succeeded.attributes["durable.attempt"]) == (1, 2)
    assert failed.status.status_code == StatusCode.ERROR and succeeded.status.status_code != StatusCode.ERROR
    assert by_name["durable.step sum"][0].attributes["durable.step_kind"] == "inline"


def test_a_resent_message_keeps_the_runs_trace_context(durable: Durable, tasks: dict[str, Any],
                                                       spans: InMemorySpanExporter) -> None:
    kept = KeptMessages()
    durable.runtime.publisher = kept

    @durable.workflow(name="unit.resent")
    def resent(ctx: Any) -> int:
        return int(ctx.run(tasks["add"], 1, 1))

    resent.run()
    (sent,) = kept.steps()
    assert sent.trace and sent.to_headers()["durable"]["trace"] == sent.trace
    kept.messages.clear()
    with durable.store.begin() as conn:
        conn.exec_driver_sql("UPDATE durable_steps SET publish_after = publish_after - 3600")
    relay(durable.store, kept, redelivery_after=60)
    (again,) = kept.steps()
    assert again.trace == sent.trace


def test_an_idempotent_start_with_another_trace_is_the_same_start(durable: Durable, tasks: dict[str, Any],
                                                                  spans: InMemorySpanExporter) -> None:
    @durable.workflow(name="unit.once")
    def once(ctx: Any, n: int) -> int:
        return n

    first = once.start(1, idempotency_key="k")
    second = once.start(1, idempotency_key="k")  # another run span, another trace context: the same run
    assert first.id == second.id
