"""Prometheus metrics for durable runs: ``pip install "durable-tasks[metrics]"``.

Set ``metrics_port`` (``app.conf.durable_metrics_port = 9808``) and every worker serves ``/metrics``, or
run ``durable metrics serve --port 9808`` next to the journal. To add the metrics to an endpoint you
already have::

    from durable_tasks.integrations.prometheus import JournalCollector, TransitionMetrics

    registry.register(JournalCollector(durable.store))          # gauges read from the journal on scrape
    durable.runtime.observers.append(TransitionMetrics(registry))  # counters of this process's changes
"""

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from durable_tasks.errors import ConfigurationError

    raise ConfigurationError(
        'Prometheus metrics need the prometheus-client package: pip install "durable-tasks[metrics]".'
    ) from exc

from .metrics import JournalCollector, TransitionMetrics, metrics_registry, serve

__all__ = ["JournalCollector", "TransitionMetrics", "metrics_registry", "serve"]
