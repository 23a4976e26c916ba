"""Operating many runs at once: ``durable runs resume|cancel|retry-step`` by filter, like a dead-letter replay.

Without a run id, these commands act on every run the filters select (``--status``, ``--workflow``,
``--since``, ``--error-type``), each in its own transaction, so one run's refusal does not stop the others.
``--dry-run`` lists the runs and changes nothing; above :data:`CONFIRM_ABOVE` runs the command asks first
(``--yes`` answers for scripts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from .cli_console import make_console, say, warn_error
from .cli_render import render_runs
from .durations import parse_duration
from .errors import DurableError
from .handle import RunRecord
from .operations import Operations
from .store import queries
from .store.database import Store
from .vocabulary import RunStatus

CONFIRM_ABOVE = 10
PAST = {"resume": "Resumed", "retry": "Retried a step in", "cancel": "Cancelled"}
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RunFilter:
    """Which runs a bulk command selects."""

    statuses: tuple[str, ...]
    workflow: str | None
    since: str | None
    error_type: str | None
    limit: int

    @property
    def given(self) -> bool:
        return bool(self.workflow or self.since or self.error_type)

    def select(self, store: Store) -> list[RunRecord]:
        created_after = None if self.since is None else time.time() - parse_duration(self.since)
        with store.read() as conn:
            rows = queries.list_runs(conn, status=self.statuses, workflow=self.workflow, created_after=created_after,
                                     error_type=self.error_type, limit=self.limit)
        return [RunRecord.from_row(row) for row in rows]


def filter_options(command: F) -> F:
    """``--status``/``--workflow``/``--since``/``--error-type``/``--limit``, ``--dry-run`` and ``--yes``."""
    options = (
        click.option("--status", "statuses", multiple=True, type=click.Choice([status.value for status in RunStatus]),
                     help="Only runs with this status (repeat for several)."),
        click.option("--workflow", help="Only runs of this workflow (registry name or chain label)."),
        click.option("--since", metavar="AGE", help="Only runs started within AGE (1h, 2d)."),
        click.option("--error-type", metavar="TYPE", help="Only runs whose error is of this type (KeyError)."),
        click.option("--limit", default=1000, show_default=True, help="Act on at most this many runs."),
        click.option("--dry-run", is_flag=True, help="List the runs it would act on; change nothing."),
        click.option("--yes", "-y", is_flag=True, help=f"Do not ask before acting on more than {CONFIRM_ABOVE} runs."),
    )
    for option in reversed(options):
        command = option(command)
    return command


def run_filter(options: dict[str, Any], default_statuses: Sequence[str]) -> RunFilter:
    return RunFilter(tuple(options["statuses"]) or tuple(default_statuses), options["workflow"], options["since"],
                     options["error_type"], options["limit"])


def operate_many(operations: Operations, store: Store, options: dict[str, Any], *, default_statuses: Sequence[str],
                 verb: str, action: Callable[[Operations, str], Any]) -> None:
    """Select runs by the filter options, then ``action(operations, run_id)`` each in its own transaction."""
    selection = run_filter(options, default_statuses)
    if not (selection.given or options["statuses"]):
        raise click.UsageError(f"Name a run id, or select runs with --status, --workflow, --since or --error-type "
                               f"(to {verb} every run in a status, give --status).")
    try:
        records = selection.select(store)
    except DurableError as exc:
        warn_error(exc)
        raise SystemExit(1) from None
    if options["dry_run"] or not records:
        make_console().print(render_runs(records))
        say(f"Would {verb} {len(records)} run(s)." if options["dry_run"] else f"No run matches; nothing to {verb}.")
        return
    if len(records) > CONFIRM_ABOVE and not options["yes"]:
        click.confirm(f"{verb.capitalize()} {len(records)} run(s)?", abort=True, err=True)
    failures = 0
    for record in records:
        try:
            action(operations, record.id)
        except DurableError as exc:
            failures += 1
            warn_error(f"run {record.id}: {exc}")
    say(f"{PAST[verb]} {len(records) - failures} of {len(records)} run(s).")
    if failures:
        raise SystemExit(1)
