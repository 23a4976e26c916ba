"""OpenTelemetry spans for runs and step attempts, when ``opentelemetry-api`` is installed.

``pip install "durable-tasks[tracing]"`` and configure a tracer provider as usual (the SDK and an
exporter); without the package, or without a provider, every call here costs next to nothing.

- ``durable.run <workflow>``: started where the run starts (``workflow.start()``, ``durable.chain(...)``),
  a child of whatever span is current there (an HTTP request, say). Its context is kept with the run's
  input in the journal, so every process that works on the run later, on any worker and after any sleep
  or restart, parents its spans to it.
- ``durable.step <step key>``: one per attempt of a step, around the step's body (task steps in the
  worker that runs them, inline steps in the coordinator), a child of the run's span, carried to task
  workers in the step message's ``durable`` header. The body's own spans nest under it. Attributes:
  ``durable.run_id``, ``durable.step_key``, ``durable.attempt``, ``durable.step_kind``.

A span has to end in the process that started it, and a run can outlive many processes and last days,
so the run's span covers its start; the run as a whole is the trace (first span to last).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

RUN_ID = "durable.run_id"
WORKFLOW = "durable.workflow"
STEP_KEY = "durable.step_key"
ATTEMPT = "durable.attempt"
STEP_KIND = "durable.step_kind"
TRACER_NAME = "durable_tasks"
TRACE_KEY = "trace"  # the key of the run's trace context in its journaled input


class Tracing:
    """Spans through the OpenTelemetry API, or nothing when the API is not installed."""

    def __init__(self) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            self._trace: Any = None
            return
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()

    @property
    def available(self) -> bool:
        return self._trace is not None

    @contextlib.contextmanager
    def run_started(self, run_id: str, workflow: str) -> Iterator[str | None]:
        """The span of a run's start; yields its context (a W3C ``traceparent``) to keep with the run."""
        if self._trace is None:
            yield None
            return
        tracer = self._trace.get_tracer(TRACER_NAME)
        with tracer.start_as_current_span(f"durable.run {workflow}", attributes={RUN_ID: run_id, WORKFLOW: workflow},
                                          kind=self._trace.SpanKind.PRODUCER) as span:
            yield self._traceparent(span)

    @contextlib.contextmanager
    def step_attempt(self, parent: str | None, *, run_id: str, step_key: str, attempt: int, kind: str,
                     **attributes: Any) -> Iterator[None]:
        """The span of one attempt of a step, a child of the run's span ``parent``; records an exception."""
        if self._trace is None:
            yield
            return
        context = self._propagator.extract({"traceparent": parent}) if parent else None
        tracer = self._trace.get_tracer(TRACER_NAME)
        names = {RUN_ID: run_id, STEP_KEY: step_key, ATTEMPT: attempt, STEP_KIND: kind}
        names.update({f"durable.{key}": value for key, value in attributes.items() if value is not None})
        with tracer.start_as_current_span(f"durable.step {step_key}", context=context, attributes=names,
                                          kind=self._trace.SpanKind.CONSUMER):
            yield

    def _traceparent(self, span: Any) -> str | None:
        if not span.get_span_context().is_valid:
            return None  # no tracer provider here: nothing to link to
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return carrier.get("traceparent")
