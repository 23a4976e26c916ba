"""Rich tables of runs, steps and workers for the ``durable`` command line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.table import Table

from .handle import RunRecord, StepRecord

STATUS_STYLE = {
    "succeeded": "green", "failed": "red", "cancelled": "magenta", "running": "cyan", "sleeping": "blue",
    "waiting": "blue", "pending": "yellow", "dispatched": "yellow", "retrying": "yellow", "lost": "red",
}


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def _status(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_runs(runs: Sequence[RunRecord]) -> Table:
    table = Table(title=f"{len(runs)} run(s), newest first")
    for column in ("id", "workflow", "status", "created", "finished", "error"):
        table.add_column(column, overflow="fold")
    for run in runs:
        error = f"{run.error.get('type', '')}: {run.error.get('message', '')}" if run.error else ""
        table.add_row(run.id, run.workflow, _status(run.status), _when(run.created_at), _when(run.finished_at),
                      _short(error))
    return table


def render_run(run: RunRecord) -> Table:
    table = Table(show_header=False, title=f"Run {run.id}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [("workflow", run.workflow), ("status", _status(run.status)),
            ("input", _short({"args": run.args, "kwargs": run.kwargs}, 200)),
            ("idempotency key", run.idempotency_key or ""), ("code fingerprint", run.fingerprint),
            ("created", _when(run.created_at)), ("updated", _when(run.updated_at)),
            ("finished", _when(run.finished_at))]
    if run.result is not None:
        rows.append(("result", _short(run.result, 200)))
    if run.error:
        rows.append(("error", f"{run.error.get('type')}: {run.error.get('message')}"))
    for field, value in rows:
        table.add_row(field, value)
    return table


def render_steps(steps: Sequence[StepRecord], title: str = "Steps") -> Table:
    table = Table(title=title)
    for column in ("#", "step", "kind", "status", "attempts", "duration", "worker", "result / error"):
        table.add_column(column, overflow="fold")
    for step in steps:
        duration = ""
        if step.started_at and step.finished_at:
            duration = f"{step.finished_at - step.started_at:.3f}s"
        history = " ".join(attempt.status for attempt in step.attempts) or "-"
        outcome = (f"{step.error.get('type', '').rsplit('.', 1)[-1]}: {step.error.get('message', '')}"
                   if step.error else _short(step.result, 50))
        table.add_row(str(step.position), step.step_key, step.kind, _status(step.status),
                      f"{step.attempt} ({history})", duration, (step.worker or "").split(":")[0], outcome)
    return table


def render_workers(rows: Sequence[Any], live_after: float) -> Table:
    table = Table(title="Worker processes (heartbeats)")
    for column in ("id", "host", "pid", "started", "last heartbeat", "state"):
        table.add_column(column)
    for row in rows:
        state = "[green]live[/green]" if row.heartbeat_at >= live_after else "[red]dead[/red]"
        table.add_row(row.id, row.hostname, str(row.pid), _when(row.started_at), _when(row.heartbeat_at), state)
    return table
