"""The metrics: counters of committed transitions, and gauges read from the journal on each scrape.

Names start with ``durable_`` so they sit beside Flower's (``flower_events_total``,
``flower_task_runtime_seconds``) on one Prometheus without clashing.

Counters count the changes committed in the process that serves them. With Celery's prefork pool the
steps run in child processes: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the worker
starts, and the endpoint adds up every child's counters (prometheus-client's multiprocess mode). The
journal gauges are the same whichever process serves them.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from durable_tasks.observe import Transition
from durable_tasks.store import health_queries
from durable_tasks.store.database import Store
from durable_tasks.vocabulary import AttemptStatus, RunStatus, StepKind, StepStatus

logger = logging.getLogger("durable_tasks.metrics")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
_COUNTER_SUFFIX = re.compile(r"#\d+$")  # "charge#2" -> "charge": one series per step, not per call
_ATTEMPT_KINDS = (StepKind.TASK, StepKind.INLINE)


def _step(transition: Transition) -> str:
    return _COUNTER_SUFFIX.sub("", transition.step_key or "")


class TransitionMetrics:
    """An observer that counts runs, attempts, retries and recoveries, and times steps and timers.

    ``registry`` is where the metrics are registered; ``None`` registers nothing (multiprocess mode,
    where values go to ``PROMETHEUS_MULTIPROC_DIR`` and the endpoint reads them from there).
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.runs = Counter("durable_run_transitions", "Runs entering each status.", ["workflow", "status"],
                            registry=registry)
        self.attempts = Counter("durable_step_attempts", "Finished step attempts by outcome "
                                "(succeeded, failed, lost).", ["step", "kind", "outcome"], registry=registry)
        self.retries = Counter("durable_step_retries", "Failed attempts followed by a retry after a backoff.",
                               ["step", "kind"], registry=registry)
        self.durations = Histogram("durable_step_duration_seconds", "How long step attempts ran.",
                                   ["step", "kind", "outcome"], buckets=DURATION_BUCKETS, registry=registry)
        self.lateness = Histogram("durable_timer_lateness_seconds", "How late timers fired after their due time.",
                                  ["purpose"], buckets=LATENESS_BUCKETS, registry=registry)
        self.recoveries = Counter("durable_recoveries", "What the sweeper and the relay recovered: lost attempts, "
                                  "re-published messages, broken leases, stalled runs.", ["kind"], registry=registry)

    def on_committed(self, transitions: Sequence[Transition]) -> None:
        for transition in transitions:
            if transition.subject == "run":
                if not transition.detail.get("announced"):
                    self.runs.labels(str(transition.detail.get("workflow", "")), transition.status).inc()
            else:
                self._step(transition)

    def on_recovered(self, kind: str, count: int) -> None:
        self.recoveries.labels(kind).inc(count)

    def _step(self, transition: Transition) -> None:
        detail = transition.detail
        if "timer" in detail and detail.get("due_at") is not None:
            self.lateness.labels(str(detail["timer"])).observe(max(0.0, transition.at - float(detail["due_at"])))
        if transition.kind not in _ATTEMPT_KINDS:
            return
        step, kind, status = _step(transition), str(transition.kind), transition.status
        if status == AttemptStatus.LOST:
            self.attempts.labels(step, kind, "lost").inc()
            self.recoveries.labels("lost_attempts").inc()
            return
        if status == StepStatus.SUCCEEDED:
            outcome = "succeeded"
        elif status in (StepStatus.RETRYING, StepStatus.FAILED) and "duration" in detail:
            outcome = "failed"  # an attempt that ran and raised (a refused dispatch has no duration)
        else:
            return
        self.attempts.labels(step, kind, outcome).inc()
        if status == StepStatus.RETRYING:
            self.retries.labels(step, kind).inc()
        if detail.get("duration") is not None:
            self.durations.labels(step, kind, outcome).observe(float(detail["duration"]))


class JournalCollector(Collector):
    """Gauges read from the journal at each scrape: runs by workflow and status, outbox and timer backlogs.

    A scrape costs a handful of aggregate queries; keep finished runs pruned (``durable runs prune``) so
    counting runs stays cheap. If the journal cannot be read, ``durable_journal_up`` is 0.
    """

    def __init__(self, store: Store, *, worker_timeout: float = 30.0) -> None:
        self.store = store
        self.worker_timeout = worker_timeout

    def describe(self) -> list[Any]:
        return []  # read lazily: registering must not query the database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()
        try:
            with self.store.read() as conn:
                runs = health_queries.count_runs(conn)
                outbox = health_queries.outbox_backlog(conn)
                pending, overdue, earliest = health_queries.timer_backlog(conn, now)
                live = len(health_queries.live_workers(conn, now - self.worker_timeout))
        except Exception:
            logger.warning("Could not read the journal for a metrics scrape.", exc_info=True)
            yield GaugeMetricFamily("durable_journal_up", "1 when the journal could be read for this scrape.", 0)
            return
        yield GaugeMetricFamily("durable_journal_up", "1 when the journal could be read for this scrape.", 1)
        by_status = GaugeMetricFamily("durable_runs", "Runs in the journal by workflow and status.",
                                      labels=["workflow", "status"])
        parked = 0
        for workflow, status, count in runs:
            by_status.add_metric([workflow, status], count)
            parked += count if status == RunStatus.FAILED else 0
        yield by_status
        yield GaugeMetricFamily("durable_runs_parked", "Runs parked as failed, waiting for an operator "
                                "(durable runs resume).", parked)
        messages = GaugeMetricFamily("durable_outbox_messages", "Messages not yet consumed or confirmed: advance "
                                     "rows, dispatched task steps nobody has claimed, your own messages "
                                     "(task_message, topic_message) no broker confirmed yet.", labels=["kind"])
        oldest = GaugeMetricFamily("durable_outbox_oldest_age_seconds", "Age of the oldest unconsumed message.",
                                   labels=["kind"])
        for kind, (count, created) in outbox.items():
            messages.add_metric([str(kind)], count)
            oldest.add_metric([str(kind)], max(0.0, now - created) if created is not None else 0.0)
        yield messages
        yield oldest
        yield GaugeMetricFamily("durable_timers_pending", "Timers (sleeps, retry backoffs) not fired yet.", pending)
        yield GaugeMetricFamily("durable_timers_overdue", "Timers past their due time and not fired yet.", overdue)
        yield GaugeMetricFamily("durable_timers_overdue_seconds", "How far past due the most overdue timer is "
                                "(0 when none is).", max(0.0, now - earliest) if earliest is not None else 0.0)
        yield GaugeMetricFamily("durable_workers_live", "Worker processes whose heartbeat is fresh.", live)


def metrics_registry(store: Store, *, worker_timeout: float = 30.0) -> tuple[CollectorRegistry, TransitionMetrics]:
    """A registry with the journal gauges and this process's counters (every process's, in multiprocess mode)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        counters = TransitionMetrics(None)
    else:
        counters = TransitionMetrics(registry)
    registry.register(JournalCollector(store, worker_timeout=worker_timeout))
    return registry, counters


def serve(registry: CollectorRegistry, port: int, address: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``address:port`` from a daemon thread; returns the server (``shutdown()``)."""
    server, _thread = start_http_server(port, addr=address, registry=registry)
    logger.info("durable-tasks metrics on http://%s:%d/metrics", address, port)
    return server
