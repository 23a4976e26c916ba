"""``durable runs watch ID``: a run's progress, live, until it ends.

It reads the journal every ``interval`` seconds (reads only: watching never slows the run) and redraws a
progress bar of the run's finished steps against the steps journaled so far, the step in progress, and
the latest steps of the timeline. A workflow journals its steps as it reaches them, so the bar's total
grows as the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from .cli_console import literal
from .cli_render import STATUS_STYLE
from .cli_timeline import render_timeline
from .handle import RunRecord, StepRecord
from .vocabulary import FINISHED_RUN_STATUSES, StepStatus

FINISHED_STEP = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CANCELLED)
RECENT_STEPS = 8


def watch(read: Callable[[], tuple[RunRecord, list[StepRecord]]], console: Console, *, interval: float = 0.5,
          timeout: float | None = None) -> RunRecord:
    """Redraw ``read()`` (the run and its steps) until the run ends or ``timeout`` passes; returns the run."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console)
    bar = progress.add_task("steps", total=None)
    deadline = None if timeout is None else time.monotonic() + timeout
    run, steps = read()
    with Live(_frame(run, steps, progress, bar), console=console, refresh_per_second=4) as live:
        while run.status not in FINISHED_RUN_STATUSES:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(interval)
            run, steps = read()
            live.update(_frame(run, steps, progress, bar))
    return run


def _frame(run: RunRecord, steps: Sequence[StepRecord], progress: Progress, bar: TaskID) -> RenderableType:
    done = sum(step.status in FINISHED_STEP for step in steps)
    total = len(steps) if run.status in FINISHED_RUN_STATUSES else max(len(steps), done + 1)
    progress.update(bar, total=total, completed=done, description=f"{run.status:>9}")
    current = next((step for step in reversed(steps) if step.status not in FINISHED_STEP), None)
    header = Text.assemble("Run ", literal(run.id, "bold"), " (", literal(run.workflow), ") ",
                           literal(run.status, STATUS_STYLE.get(run.status, "")))
    now_line = Text.assemble("now: ", literal(current.step_key), " ", literal(current.status)) if current \
        else Text("")
    recent = list(steps)[-RECENT_STEPS:]
    title = "Latest steps" if len(steps) > RECENT_STEPS else "Steps"
    return Group(header, progress.make_tasks_table(progress.tasks), now_line, render_timeline(recent, title=title))
