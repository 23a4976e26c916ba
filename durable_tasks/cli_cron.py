"""``durable cron``: list, pause, resume, trigger and backfill durable schedules, and import celery beat's.

Registered on the ``durable`` command by :mod:`durable_tasks.cli`. Like ``durable runs``, the commands work
from ``--store`` alone; without ``-A`` the runs that ``trigger`` and ``backfill`` start leave their first
message in the outbox, and the workers' relay sends it within a second. ``import`` reads the app named by
``-A``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click
from celery import Celery
from celery.app.utils import find_app
from rich.table import Table

from .cli import _META, _context, _guarded, _journal_text, main, store_options
from .cli_console import literal, make_console, say
from .cron import TASK_WORKFLOW, Declaration, app_scope, task_declaration
from .registry import step_definition
from .schedule_ops import ScheduleInfo, ScheduleOperations

STATE_STYLE = {"active": "green", "paused": "yellow", "ended": "dim", "removed": "magenta"}
RUN_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "magenta", "running": "cyan", "sleeping": "blue",
             "pending": "yellow"}


def _operations(ctx: click.Context) -> ScheduleOperations:
    context = _context(ctx)
    return ScheduleOperations(context.store, context.operations.unit_of_work)


def _when(epoch: float | None, tz: str) -> str:
    """A time in the schedule's own zone, as its cron expression reads it: ``2025-03-31 09:00:00 CEST``."""
    if epoch is None:
        return ""
    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    return datetime.fromtimestamp(epoch, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def render_schedules(schedules: Sequence[ScheduleInfo]) -> Table:
    """The table of ``durable cron list``: one row per schedule, times in the schedule's zone."""
    table = Table(title=f"{len(schedules)} schedule(s)")
    for column in ("name", "runs", "when", "state", "next tick", "last tick", "last run", "status", "missed",
                   "skipped"):
        table.add_column(column, overflow="fold")
    for item in schedules:
        state = item.state if not item.waiting else f"{item.state} ({item.waiting} waiting)"
        status = item.last_run_status or ""
        table.add_row(literal(item.name), literal(item.target), literal(item.calendar),
                      literal(state, STATE_STYLE.get(item.state, "")), _when(item.next_tick, item.tz),
                      _when(item.last_tick, item.tz), literal(item.last_run_id or ""),
                      literal(status, RUN_STYLE.get(status, "")), str(item.missed), str(item.skipped))
    return table


@main.group()
@store_options
def cron() -> None:
    """Durable schedules: list, pause, resume, trigger, backfill, and import from celery beat."""


@cron.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Also schedules the code no longer declares.")
@store_options
@click.pass_context
def cron_list(ctx: click.Context, include_removed: bool) -> None:
    """Schedules with their next and last tick, last run and its status, missed and skipped ticks."""
    schedules = _guarded(lambda: _operations(ctx).overview(include_removed=include_removed))
    make_console().print(render_schedules(schedules))


@cron.command("pause")
@click.argument("name", callback=_journal_text)
@store_options
@click.pass_context
def cron_pause(ctx: click.Context, name: str) -> None:
    """Stop starting runs until resumed (ticks pass, counted as skipped); survives deploys."""
    _guarded(lambda: _operations(ctx).pause(name))
    say(f"Schedule {name!r} is paused; its ticks pass without runs until `durable cron resume {shlex.quote(name)}`.")


@cron.command("resume")
@click.argument("name", callback=_journal_text)
@store_options
@click.pass_context
def cron_resume(ctx: click.Context, name: str) -> None:
    """Start runs again, from the current tick (ticks missed while paused are not caught up)."""
    _guarded(lambda: _operations(ctx).resume(name))
    say(f"Schedule {name!r} is active again.")


@cron.command("trigger")
@click.argument("name", callback=_journal_text)
@store_options
@click.pass_context
def cron_trigger(ctx: click.Context, name: str) -> None:
    """Start an extra run now, under its own key (the overlap policy and a pause do not apply)."""
    run_id = _guarded(lambda: _operations(ctx).trigger(name))
    say(f"Started run {run_id} of schedule {name!r}; `durable runs show {run_id}` follows it.")


def _moment(ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time such as 2025-03-01T09:00 or "
                                 "2025-03-01T08:00:00+00:00.") from None


@cron.command("backfill")
@click.argument("name", callback=_journal_text)
@click.option("--from", "start", required=True, callback=_moment, metavar="TIME",
              help="First tick to consider, ISO 8601; without an offset, in the schedule's time zone.")
@click.option("--to", "end", required=True, callback=_moment, metavar="TIME",
              help="Last tick to consider (at most now), ISO 8601.")
@store_options
@click.pass_context
def cron_backfill(ctx: click.Context, name: str, start: datetime, end: datetime) -> None:
    """Start the ticks between --from and --to that have no run yet (safe to run again)."""
    started = _guarded(lambda: _operations(ctx).backfill(name, start, end))
    if not started:
        say(f"Every tick of schedule {name!r} from {start.isoformat()} to {end.isoformat()} already has a run "
            "(or none falls in the range).")
        return
    say(f"Started {len(started)} run(s) of schedule {name!r} for ticks that had none:")
    for tick, run_id in started:
        say(f"  {datetime.fromtimestamp(tick, UTC).isoformat()}  run {run_id}")


@cron.command("import")
@click.option("--apply", "apply", is_flag=True,
              help="Write the converted entries as schedules of their tasks instead of printing declarations.")
@store_options
@click.pass_context
def cron_import(ctx: click.Context, apply: bool) -> None:
    """Read the app's celery beat_schedule: print durable.cron declarations, or --apply them."""
    app_spec = ctx.meta.get(_META + "app")
    if not app_spec:
        raise click.UsageError("durable cron import reads the beat_schedule of your Celery app: name it with -A, "
                               "e.g. durable cron import -A proj.celery")
    from durable_tasks.integrations.beat import read_beat_schedule, render_declarations  # imports the project

    from .cli_app import load_durable

    if not apply:  # printing needs only the Celery app: a project still on beat may have no Durable yet
        click.echo(render_declarations(read_beat_schedule(_celery_app(app_spec))), nl=False)
        return
    durable = load_durable(app_spec)
    result = read_beat_schedule(durable.app)
    declarations: list[Declaration] = []
    refused: list[tuple[str, str]] = []
    for imported in result.schedules:
        if step_definition(durable.app.tasks[imported.task]) is None:
            refused.append((imported.name, _not_a_step(imported.task)))
            continue
        declarations.append(_guarded(lambda imported=imported: task_declaration(
            imported.spec, imported.task, args=imported.args, kwargs=imported.kwargs, options=imported.options,
            fingerprint=durable.runtime.registry.get(TASK_WORKFLOW).fingerprint, module=None,
            max_bytes=durable.settings.max_payload_bytes)))
    outcome = _guarded(lambda: durable.schedule_operations.apply(app_scope(durable.app), declarations))
    refused += [(name, reason) for name, reason in outcome if reason is not None]
    applied = [name for name, reason in outcome if reason is None]
    store = durable.store.redacted_url()
    if applied:
        say(f"Applied {len(applied)} schedule(s) to {store}: {', '.join(applied)}. Any worker of the app fires them "
            f"from now on; delete these entries from beat_schedule. `durable cron list -A {shlex.quote(app_spec)}` "
            "shows them.")
    else:
        say(f"No schedule was applied to {store}.")
    if refused:
        say("Not applied:")
        for name, reason in refused:
            say(f"- {name}: {reason}")
    if result.unconverted:
        say("Left in beat (not converted):")
        for entry in result.unconverted:
            say(f"- {entry.name}: {entry.reason}")


def _celery_app(spec: str) -> Celery:
    """The Celery app named by ``spec`` as ``celery -A`` names it, with or without a Durable instance."""
    from .cli_app import load_durable

    try:
        return load_durable(spec).app
    except click.BadParameter as refused:
        try:
            found = find_app(spec)
        except Exception:
            raise refused from None
        if isinstance(found, Celery):
            return found
        raise


def _not_a_step(task: str) -> str:
    return (f"task {task!r} is not a durable step, so a schedule could not journal its result. Paste its "
            "declaration (durable cron import without --apply prints it) into a module every worker imports: "
            "durable.cron(...)(task) makes the task a durable step there. Or decorate the task with @durable.step "
            "and apply again.")
