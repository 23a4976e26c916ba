"""``durable timers`` runs the timer service on its own; ``durable kafka create-topics`` prepares Kafka.

Registered on the ``durable`` command by :mod:`durable_tasks.cli`. Both take your ``Durable`` with ``-A``
(its settings choose the timer backend and name the Kafka cluster).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from .cli import _META, _guarded, main, store_options
from .cli_console import literal, make_console, say


def _durable(ctx: click.Context, command: str) -> Any:
    spec = ctx.meta.get(_META + "app")
    if not spec:
        raise click.UsageError(f"durable {command} needs your Durable instance: -A APP (as for celery -A), so it "
                               "uses your timer backend and Kafka settings.")
    from .cli_app import load_durable  # imports the user's project: only when asked to

    return load_durable(spec)


@main.command("timers")
@click.option("--no-consumer", is_flag=True, help="Only hand off and reconcile; let the workers consume Kafka.")
@store_options
@click.pass_context
def timers(ctx: click.Context, no_consumer: bool) -> None:
    """Run the timer service until stopped: fire due timers (database backend), or with Kafka consume the delay
    topics, hand off timers that come near, and fire overdue ones from the database (the reconciler)."""
    durable = _durable(ctx, "timers")
    settings = durable.settings
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    _guarded(durable.store.ensure_ready)
    durable.runtime.identity.start()
    if not no_consumer:
        durable.timers.start()
    say(f"Timer service ({settings.timer_backend} backend) running on {durable.store.redacted_url()}; "
        "Ctrl-C to stop.")
    try:
        while not stop.is_set():
            try:
                durable.timers.fire_due()
            except Exception as exc:  # the database or Kafka may be down: keep the service alive
                make_console(stderr=True).print(literal(f"timers: {type(exc).__name__}: {exc}; retrying."))
            stop.wait(settings.timer_interval)
    finally:
        durable.timers.stop()
        durable.close()


@main.group()
def kafka() -> None:
    """Kafka delay topics of the Kafka timer backend."""


@kafka.command("create-topics")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for Kafka.")
@store_options
@click.pass_context
def create_topics(ctx: click.Context, timeout: float) -> None:
    """Create the tier topics (partitions, retention, timestamp type) and report those that exist already."""
    durable = _durable(ctx, "kafka create-topics")
    if not durable.settings.kafka_servers:
        raise click.UsageError("The Durable instance has no kafka_servers: set Durable(app, kafka_servers=...) "
                               "or app.conf.durable_kafka_servers.")
    from .integrations.kafka import create_topics as create
    from .integrations.kafka.backend import config_from_settings

    reports = _guarded(lambda: create(config_from_settings(durable.settings), timeout=timeout))
    for report in reports:
        say(str(report))
