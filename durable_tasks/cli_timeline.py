"""One run's timeline for ``durable runs show`` and ``runs watch``, and runs as JSON for ``--json``.

The timeline has a row per step (what it is, its status, when it started, how long it took, and what it
returned, raised, sleeps until or waits for) and, under a step that took more than one attempt, a row per
attempt. Journaled text goes through :func:`~durable_tasks.cli_console.literal`, never markup.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from .cli_console import literal
from .cli_render import STATUS_STYLE, _error, _short, _when
from .handle import AttemptRecord, RunRecord, StepRecord
from .vocabulary import StepKind, StepStatus

EVENT_KIND = "event"  # steps that wait for an outside event (ctx.wait_for_event)


def render_timeline(steps: Sequence[StepRecord], *, now: float | None = None, title: str = "Timeline") -> Table:
    """The steps of a run in order, with their attempts, durations, errors, sleeps and awaited events."""
    now = time.time() if now is None else now
    table = Table(title=literal(title))
    for column in ("#", "step", "kind", "status", "started", "duration", "detail"):
        table.add_column(column, overflow="fold")
    for step in steps:
        table.add_row(str(step.position), literal(step.step_key), literal(step.kind), _status(step.status),
                      _when(step.started_at or step.created_at), _step_duration(step, now), _detail(step, now))
        if len(step.attempts) > 1 or any(attempt.status != StepStatus.SUCCEEDED for attempt in step.attempts):
            for attempt in step.attempts:
                table.add_row("", literal(f"  attempt {attempt.attempt}"), "", _status(attempt.status),
                              _when(attempt.started_at), _seconds(attempt.duration), _attempt_detail(attempt))
    return table


def _status(status: str) -> Text:
    return literal(status, STATUS_STYLE.get(status, ""))


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.3f}s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _step_duration(step: StepRecord, now: float) -> str:
    if step.kind == StepKind.SLEEP and step.due_at is not None:
        return _seconds(max(0.0, step.due_at - step.created_at))
    if step.started_at is None:
        return ""
    if step.finished_at is not None:
        return _seconds(step.finished_at - step.started_at)
    if step.status == StepStatus.RUNNING:
        return f"{_seconds(now - step.started_at)} so far"
    return ""


def _relative(moment: float, now: float) -> str:
    delta = moment - now
    return f"in {_seconds(delta)}" if delta >= 0 else f"{_seconds(-delta)} ago"


def _detail(step: StepRecord, now: float) -> Text:
    if step.kind == StepKind.SLEEP:
        if step.due_at is None:
            return literal("")
        verb = "sleeps until" if step.status == StepStatus.SLEEPING else "slept until"
        return literal(f"{verb} {_when(step.due_at)} ({_relative(step.due_at, now)})")
    if step.kind == EVENT_KIND:
        waits = "waits for" if step.status not in (StepStatus.SUCCEEDED, StepStatus.FAILED) else "waited for"
        timeout = f", times out {_when(step.due_at)}" if step.due_at else ""
        return literal(f"{waits} event {step.name}{timeout}")
    if step.kind == StepKind.MARKER:
        return literal(f"follows change {step.name}")
    if step.kind == StepKind.CHILD and step.status == StepStatus.RUNNING:
        return literal(f"waits for child run {step.child_run}")
    if step.status == StepStatus.RETRYING and step.error:
        when = f"next attempt {_when(step.due_at)} ({_relative(step.due_at, now)}); " if step.due_at else ""
        return literal(f"{when}{_error(step.error, short_type=True)}")
    if step.error:
        return literal(_error(step.error, short_type=True))
    if step.status == StepStatus.SUCCEEDED:
        return _short(step.result, 60)
    if step.worker:
        return literal(f"on {step.worker.split(':')[0]}")
    return literal("")


def _attempt_detail(attempt: AttemptRecord) -> Text:
    where = f" on {attempt.worker.split(':')[0]}" if attempt.worker else ""
    if attempt.error_type:
        return literal(f"{attempt.error_type.rsplit('.', 1)[-1]}: {attempt.error_message or ''}{where}")
    return literal(where.strip())


# --- JSON ---------------------------------------------------------------------------------------------


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp is not None else None


def run_json(run: RunRecord) -> dict[str, Any]:
    """A run as plain JSON values; times as ISO 8601 (UTC) next to the epoch seconds the journal keeps."""
    data = asdict(run)
    for key in ("created_at", "updated_at", "finished_at"):
        data[key.removesuffix("_at")] = _iso(data[key])
    return data


def step_json(step: StepRecord) -> dict[str, Any]:
    """A step with its attempts, as plain JSON values (times as for :func:`run_json`)."""
    data = asdict(step)
    for key in ("created_at", "started_at", "finished_at", "due_at"):
        data[key.removesuffix("_at")] = _iso(data[key])
    for attempt in data["attempts"]:
        attempt["started"] = _iso(attempt["started_at"])
    return data
