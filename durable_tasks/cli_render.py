"""Rich tables of runs, steps and workers for the ``durable`` command line.

Every cell that holds journaled text is a :func:`~durable_tasks.cli_console.literal` ``Text``, never a markup
string: the journal holds whatever workflows, steps and exceptions wrote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from .cli_console import literal
from .handle import RunLink, RunRecord, StepRecord
from .vocabulary import StepStatus

STATUS_STYLE = {
    "succeeded": "green", "failed": "red", "cancelled": "magenta", "running": "cyan", "sleeping": "blue",
    "waiting": "blue", "pending": "yellow", "dispatched": "yellow", "retrying": "yellow", "lost": "red",
}


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def _status(status: str) -> Text:
    return literal(status, STATUS_STYLE.get(status, ""))


def _short(value: Any, width: int = 60) -> Text:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return literal(text if len(text) <= width else text[: width - 1] + "…")


def _error(error: dict[str, Any], *, short_type: bool = False) -> str:
    kind = str(error.get("type", ""))
    return f"{kind.rsplit('.', 1)[-1] if short_type else kind}: {error.get('message', '')}"


def render_runs(runs: Sequence[RunRecord]) -> Table:
    """The runs table of ``durable runs list``: id, workflow, status, created, finished, error."""
    table = Table(title=f"{len(runs)} run(s), newest first")
    for column in ("id", "workflow", "status", "created", "finished", "error"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(literal(run.id), literal(run.name), _status(run.status), _when(run.created_at),
                      _when(run.finished_at), _short(_error(run.error) if run.error else ""))
    return table


def render_run(run: RunRecord, parent: RunLink | None = None) -> Table:
    """One run's fields for ``durable runs show``; ``parent`` is the run that started it as a child."""
    table = Table(show_header=False, title=Text.assemble("Run ", literal(run.id)))
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, Text]] = [
        ("workflow", literal(run.workflow)), *([("label", literal(run.label))] if run.label else []),
        *([("forked from", literal(run.forked_from))] if run.forked_from else []),
        *([("parent", literal(f"{parent.run_id} ({parent.workflow}, {parent.status}), its step "
                                 f"#{parent.position} {parent.step_key}, attempt {parent.attempt}"))]
          if parent else []),
        ("status", _status(run.status)),
        ("input", _short({"args": run.args, "kwargs": run.kwargs}, 200)),
        ("idempotency key", literal(run.idempotency_key or "")), ("code fingerprint", literal(run.fingerprint)),
        ("created", literal(_when(run.created_at))), ("updated", literal(_when(run.updated_at))),
        ("finished", literal(_when(run.finished_at)))]
    if run.result is not None:
        rows.append(("result", _short(run.result, 200)))
    if run.error:
        rows.append(("error", literal(f"{run.error.get('type')}: {run.error.get('message')}")))
    for field, value in rows:
        table.add_row(field, value)
    return table


def render_children(children: Sequence[RunLink]) -> Table:
    """The child runs of a run (``ctx.start_child``), each with the step and attempt that started it."""
    table = Table(title=f"{len(children)} child run(s)")
    for column in ("id", "workflow", "status", "started by step", "attempt"):
        table.add_column(column, overflow="fold")
    for child in children:
        step = "" if child.step_key is None else f"#{child.position} {child.step_key}"
        table.add_row(literal(child.run_id), literal(child.workflow), _status(child.status), literal(step),
                      literal("" if child.attempt is None else str(child.attempt)))
    return table


def render_steps(steps: Sequence[StepRecord], title: str = "Steps") -> Table:
    """The journal of a run, one row per step, for ``durable runs show`` and the demo."""
    table = Table(title=literal(title))
    for column in ("#", "step", "kind", "status", "attempts", "duration", "worker", "result / error"):
        table.add_column(column, overflow="fold")
    for step in steps:
        duration = ""
        if step.started_at and step.finished_at:
            duration = f"{step.finished_at - step.started_at:.3f}s"
        history = " ".join(attempt.status for attempt in step.attempts) or "-"
        outcome = literal(_error(step.error, short_type=True)) if step.error else _short(step.result, 50)
        if step.due_at is not None:
            due = "wakes up" if step.status == StepStatus.SLEEPING else "next attempt"
            outcome = Text.assemble(outcome, f" ({due} at {_when(step.due_at)})")
        table.add_row(str(step.position), literal(step.step_key), literal(step.kind), _status(step.status),
                      literal(f"{step.attempt} ({history})"), duration, literal((step.worker or "").split(":")[0]),
                      outcome)
    return table


def worker_state(row: Any, now: float, default_timeout: float) -> str:
    """``stopped`` (clean shutdown), ``dead`` (no heartbeat within its own ``worker_timeout``), ``late`` (a
    heartbeat or two missed: maybe killed, declared dead after the timeout) or ``live``."""
    if row.stopped_at is not None:
        return "stopped"
    age = now - row.heartbeat_at
    if age > (row.timeout or default_timeout):
        return "dead"
    if row.heartbeat_interval and age > 2.5 * row.heartbeat_interval:
        return "late"
    return "live"


WORKER_STATE_STYLE = {"live": "green", "late": "yellow", "dead": "red", "stopped": "dim"}


def render_workers(rows: Sequence[Any], now: float, default_timeout: float) -> Table:
    """Processes known by their heartbeat rows: role and state (see :func:`worker_state`)."""
    table = Table(title="Worker processes (heartbeats)")
    for column in ("id", "role", "host", "pid", "started", "last heartbeat", "state"):
        table.add_column(column)
    for row in rows:
        state = worker_state(row, now, default_timeout)
        table.add_row(literal(row.id), literal(row.role or "?"), literal(row.hostname), literal(row.pid),
                      _when(row.started_at), _when(row.heartbeat_at), Text(state, WORKER_STATE_STYLE[state]))
    return table
