"""The ``durable`` command: database migrations, the demo, watching and operating runs, metrics.

The store comes from ``-A APP`` (your Celery app or your :class:`~durable_tasks.Durable` instance, named as
``celery -A`` names an app), else from ``--store URL`` / ``$DURABLE_STORE``, else the default SQLite file.
These options go before or after the subcommand (``durable db upgrade --store URL``). Without ``-A`` the
commands that change runs leave their messages in the outbox, and the workers' relay sends them within a second.

Results go to stdout, errors to stderr (``error: ...``, exit status 1; usage errors exit with 2). Journaled
text is printed literally (see :mod:`durable_tasks.cli_console`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

import click

from .cli_bulk import filter_options, operate_many
from .cli_console import (
    heading,
    literal,
    make_console,
    neutralise,
    say,
    tolerate_unencodable_output,
    warn_error,
)
from .cli_render import render_children, render_run, render_runs, render_workers
from .cli_timeline import render_timeline, run_json, step_json
from .durations import parse_duration
from .errors import DurableError
from .handle import RunRecord, load_family, load_run, load_steps
from .messages import Message
from .operations import Operations
from .outbox import UnitOfWork
from .store import health_queries, queries
from .store.database import Store
from .store.engine import default_store_url
from .vocabulary import ACTIVE_RUN_STATUSES, RunStatus

RUN_STATUSES = [status.value for status in RunStatus]
F = TypeVar("F", bound=Callable[..., Any])
_META = "durable_tasks.cli."  # prefix of our keys in click's ``ctx.meta``, shared by a command and its groups


class DeferredPublisher:
    """Publishes nothing: the messages stay in the outbox for the workers' relay."""

    def publish(self, message: Message) -> None:
        return None  # written with publish_after=now, so the next relay pass sends it

    def queue_of(self, message: Message) -> str | None:
        return None  # the workers' relay, which knows the routes, sends it

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int | None]:
        return dict.fromkeys(queues)


@dataclass
class Context:
    store: Store
    operations: Operations
    worker_timeout: float


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # The group and the subcommand both take these options; the one nearer the command wins.
    if value is not None:
        ctx.meta[_META + str(param.name)] = value
    return value


_STORE_OPTIONS = (
    click.option("-A", "--app", "app", metavar="APP", expose_value=False, callback=_remember,
                 help="Your Celery app or Durable instance, named as for celery -A (proj, proj.celery:app, "
                      "proj.tasks:durable). Uses its store and settings and publishes messages right away."),
    click.option("--store", metavar="URL", expose_value=False, callback=_remember,
                 help="Journal database URL (default $DURABLE_STORE, else sqlite:///durable.sqlite3)."),
    click.option("--schema", metavar="NAME", expose_value=False, callback=_remember,
                 help="PostgreSQL schema of the tables."),
)


def _journal_text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # Bytes that are not UTF-8 reach Python as lone surrogates; no journaled id or key can hold them.
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise click.BadParameter(f"'{neutralise(value)}' is not valid UTF-8 text, so no run or step "
                                     "in the journal has it.") from None
    return value


def store_options(command: F) -> F:
    """Add ``-A/--app``, ``--store`` and ``--schema`` to a command, so they work after the subcommand too."""
    for option in reversed(_STORE_OPTIONS):
        command = option(command)
    return command


@click.group()
@store_options
def main() -> None:
    """durable-tasks: durable workflows and chains for Celery."""
    tolerate_unencodable_output()
    if "." not in sys.path:
        sys.path.insert(0, ".")  # like celery -A: the project in the current directory is importable


def _build(meta: dict[str, Any]) -> Context:
    app_spec, store, schema = (meta.get(_META + name) for name in ("app", "store", "schema"))
    if app_spec:
        if store or schema:
            raise click.UsageError("-A/--app takes the store and schema from your Durable instance: drop "
                                   "--store/--schema, or drop -A to name the store yourself.")
        from .cli_app import load_durable  # imports the user's project: only when asked to

        durable = load_durable(app_spec)
        # Reads open the store read-only: they never create or migrate it (auto_migrate is for workers).
        reader = Store(durable.store.url, schema=durable.store.schema,
                       sqlite_synchronous=durable.settings.sqlite_synchronous)
        return Context(reader, durable.operations, durable.settings.worker_timeout)
    journal = Store(store or default_store_url(), schema=schema)
    operations = Operations(journal, lambda: UnitOfWork(journal, DeferredPublisher(), redelivery_after=0))
    return Context(journal, operations, 30.0)


def _context(ctx: click.Context) -> Context:
    key = _META + "context"
    if key not in ctx.meta:
        ctx.meta[key] = _build(ctx.meta)
    context: Context = ctx.meta[key]
    return context


def _guarded(call: Any) -> Any:
    """``call()``; a durable-tasks error is printed to stderr as ``error: ...`` and exits with status 1."""
    try:
        return call()
    except DurableError as exc:
        warn_error(exc)
        raise SystemExit(1) from None


# --- db --------------------------------------------------------------------------------------------------


@main.group()
@store_options
def db() -> None:
    """Create, upgrade and check the journal tables."""


@db.command("upgrade")
@store_options
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every missing migration (safe to run again)."""
    store = _context(ctx).store
    _guarded(store.upgrade)
    say(f"Journal tables are up to date in {store.redacted_url()}.")


@db.command("check")
@store_options
@click.pass_context
def db_check(ctx: click.Context) -> None:
    """Exit 1 unless the tables are at this version's migration head."""
    store = _context(ctx).store
    _guarded(store.ensure_ready)
    say(f"{store.redacted_url()} is up to date.")


# --- demo ------------------------------------------------------------------------------------------------


@main.command()
def demo() -> None:
    """Run a workflow, kill -9 its worker mid-run, and watch it resume (no server needed)."""
    from .demo import run_demo

    raise SystemExit(0 if run_demo(say) else 1)


# --- runs ------------------------------------------------------------------------------------------------


@main.group()
@store_options
def runs() -> None:
    """List, inspect and operate runs."""


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--since``: an age (``2h``, ``30m``, ``7d``) or a date and time (``2024-05-01``, ``2024-05-01T09:30``)."""
    if value is None:
        return None
    try:
        return time.time() - parse_duration(value)
    except DurableError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"'{neutralise(value)}' is neither an age such as 2h or 7d nor a date such as "
                                 "2024-05-01 or 2024-05-01T09:30.") from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@runs.command("list")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs with this status.")
@click.option("--workflow", callback=_journal_text, help="Only runs of this workflow.")
@click.option("--since", callback=_since, metavar="AGE|DATE",
              help="Only runs created since then: an age (2h, 7d) or a date/time (2024-05-01T09:30, local time).")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@store_options
@click.pass_context
def runs_list(ctx: click.Context, status: str | None, workflow: str | None, since: float | None, limit: int,
              as_json: bool) -> None:
    """The latest runs, newest first."""
    def read() -> list[Any]:
        with _context(ctx).store.read() as conn:
            return queries.list_runs(conn, status=status, workflow=workflow, created_after=since, limit=limit)

    records = [RunRecord.from_row(row) for row in _guarded(read)]
    if as_json:
        _print_json([run_json(run) for run in records])
    else:
        make_console().print(render_runs(records))


@runs.command("show")
@click.argument("run_id", callback=_journal_text)
@click.option("--traceback", "show_tracebacks", is_flag=True, help="Print the traceback of failed attempts.")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its steps as JSON.")
@store_options
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, show_tracebacks: bool, as_json: bool) -> None:
    """A run and its timeline: each step, its attempts, durations, errors, sleeps and awaited events; its
    parent run and child runs."""
    store = _context(ctx).store
    run = _guarded(lambda: load_run(store, run_id))
    steps = _guarded(lambda: load_steps(store, run_id))
    parent, children = _guarded(lambda: load_family(store, run_id))
    if as_json:
        _print_json({"run": run_json(run), "steps": [step_json(step) for step in steps],
                     "parent": asdict(parent) if parent else None, "children": [asdict(child) for child in children]})
        return
    console = make_console()
    console.print(render_run(run, parent))
    console.print(render_timeline(steps))
    if children:
        console.print(render_children(children))
    if show_tracebacks:
        for step in steps:
            for attempt in step.attempts:
                if attempt.traceback:
                    heading(console, f"{step.step_key} attempt {attempt.attempt} ({attempt.status})")
                    console.print(literal(attempt.traceback), soft_wrap=True)


@runs.command("watch")
@click.argument("run_id", callback=_journal_text)
@click.option("--interval", default=0.5, show_default=True, help="Seconds between two reads of the journal.")
@click.option("--timeout", type=float, help="Stop watching after this many seconds (exit status 3).")
@store_options
@click.pass_context
def runs_watch(ctx: click.Context, run_id: str, interval: float, timeout: float | None) -> None:
    """Follow a run live, with a progress bar of its steps, until it ends.

    Exit status: 0 when the run succeeded, 1 when it failed or was cancelled, 3 on --timeout.
    """
    from .cli_watch import watch

    store = _context(ctx).store

    def read() -> tuple[RunRecord, list[Any]]:
        return load_run(store, run_id), load_steps(store, run_id)

    run = _guarded(lambda: watch(read, make_console(), interval=interval, timeout=timeout))
    if run.status == RunStatus.SUCCEEDED:
        return
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        error = run.error or {}
        warn_error(f"Run {run_id} {run.status}: {error.get('type')}: {error.get('message')}")
        raise SystemExit(1)
    warn_error(f"Run {run_id} is still {run.status} after {timeout}s.")
    raise SystemExit(3)


def _operate(ctx: click.Context, call: Any, done: Any) -> None:
    """Run an operation; ``done(value)`` says what happened."""
    say(done(_guarded(lambda: call(_context(ctx).operations))))


def _one_or_many(ctx: click.Context, run_id: str | None, filters: dict[str, Any], *, verb: str,
                 default_statuses: Sequence[str], action: Callable[[Operations, str], Any], done: str) -> None:
    """Act on ``run_id``, or on every run the filters select (see :mod:`durable_tasks.cli_bulk`)."""
    if run_id is None:
        context = _context(ctx)
        operate_many(context.operations, context.store, filters, default_statuses=default_statuses, verb=verb,
                     action=action)
        return
    if any(filters[name] for name in ("statuses", "workflow", "since", "error_type", "dry_run")):
        raise click.UsageError("Give a run id or filters (--status, --workflow, --since, --error-type), not both.")
    _operate(ctx, lambda ops: action(ops, run_id), lambda _: done)


@runs.command("resume")
@click.argument("run_id", required=False, callback=_journal_text)
@filter_options
@store_options
@click.pass_context
def runs_resume(ctx: click.Context, run_id: str | None, **filters: Any) -> None:
    """Continue a failed run at its failed step (after you fixed the cause); or every failed run selected
    by the filters."""
    _one_or_many(ctx, run_id, filters, verb="resume", default_statuses=[RunStatus.FAILED],
                 action=lambda ops, rid: ops.resume(rid), done=f"Run {run_id} resumes at its failed step.")


@runs.command("retry-step")
@click.argument("run_id", required=False, callback=_journal_text)
@click.argument("step", required=False, callback=_journal_text)
@click.option("--step", "step_option", metavar="STEP", callback=_journal_text,
              help="With filters instead of a run id: the step to run again in each selected run.")
@filter_options
@store_options
@click.pass_context
def runs_retry_step(ctx: click.Context, run_id: str | None, step: str | None, step_option: str | None,
                    **filters: Any) -> None:
    """Run a failed step, or one waiting out its backoff, again now (RUN_ID STEP, or --step STEP with filters)."""
    key = step or step_option
    if key is None:
        raise click.UsageError("Name the step: RUN_ID STEP, or --step STEP with filters.")
    _one_or_many(ctx, run_id, filters, verb="retry", default_statuses=[RunStatus.FAILED, *ACTIVE_RUN_STATUSES],
                 action=lambda ops, rid: ops.retry_step(rid, key), done=f"Step {key!r} of run {run_id} runs again.")


@runs.command("cancel")
@click.argument("run_id", required=False, callback=_journal_text)
@click.option("--reason", default="cancelled by operator", show_default=True)
@click.option("--terminate", is_flag=True,
              help="Also stop the task steps running now: their workers terminate them (prefork pools).")
@filter_options
@store_options
@click.pass_context
def runs_cancel(ctx: click.Context, run_id: str | None, reason: str, terminate: bool, **filters: Any) -> None:
    """Cancel a run and its child runs: nothing new starts, running steps can see it (or, with --terminate,
    are terminated); or every run selected by the filters."""
    stopped = " Its running task steps are journaled cancelled; their workers terminate them." if terminate else ""
    _one_or_many(ctx, run_id, filters, verb="cancel", default_statuses=[*ACTIVE_RUN_STATUSES, RunStatus.FAILED],
                 action=lambda ops, rid: ops.cancel(rid, reason, terminate=terminate),
                 done=f"Run {run_id} is cancelled.{stopped}")


@runs.command("fork")
@click.argument("run_id", callback=_journal_text)
@click.option("--from-step", "from_step", required=True, callback=_journal_text, help="The first step to run again.")
@store_options
@click.pass_context
def runs_fork(ctx: click.Context, run_id: str, from_step: str) -> None:
    """Start a new run that reuses the journal before STEP (replay after a fix)."""
    _operate(ctx, lambda ops: ops.fork(run_id, from_step),
             lambda new_id: f"Forked run {run_id} from step {from_step!r} as run {new_id}.")


@runs.command("prune")
@click.option("--older-than", "older_than", required=True, help="Age such as 30d or 12h.")
@click.option("--status", type=click.Choice(["succeeded", "failed", "cancelled"]), help="Only this status.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@store_options
@click.pass_context
def runs_prune(ctx: click.Context, older_than: str, status: str | None, dry_run: bool) -> None:
    """Delete finished runs (and their journals) older than the given age, in batches."""
    seconds = _guarded(lambda: parse_duration(older_than))
    if dry_run:
        context = _context(ctx)
        run_ids = _guarded(lambda: context.operations.prunable(seconds, status))
        records = _guarded(lambda: [load_run(context.store, run_id) for run_id in run_ids])
        make_console().print(render_runs(records))
        say(f"Would delete {len(run_ids)} finished run(s) older than {older_than}"
            + (" (the first 1000)." if len(run_ids) >= 1000 else "."))
        return
    _operate(ctx, lambda ops: ops.prune(seconds, status),
             lambda deleted: f"Deleted {deleted} finished run(s) older than {older_than}.")


@main.command()
@store_options
@click.pass_context
def workers(ctx: click.Context) -> None:
    """Worker processes known by their heartbeats."""
    context = _context(ctx)

    def read() -> list[Any]:
        with context.store.read() as conn:
            return health_queries.list_workers(conn)

    rows = _guarded(read)
    make_console().print(render_workers(rows, time.time(), context.worker_timeout))


# --- metrics ---------------------------------------------------------------------------------------------


@main.group()
@store_options
def metrics() -> None:
    """Prometheus metrics read from the journal (needs durable-tasks[metrics])."""


@metrics.command("serve")
@click.option("--port", default=9808, show_default=True, help="Port of the /metrics endpoint.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 to be scraped from other hosts.")
@store_options
@click.pass_context
def metrics_serve(ctx: click.Context, port: int, address: str) -> None:
    """Serve the journal's gauges (runs by status, outbox and timer backlogs, parked runs) until stopped.

    Counters of attempts, retries and recoveries are served by the workers (durable_metrics_port).
    """
    context = _context(ctx)

    def start() -> None:
        from .integrations.prometheus import metrics_registry, serve

        context.store.ensure_ready()
        registry, _ = metrics_registry(context.store, worker_timeout=context.worker_timeout)
        serve(registry, port, address)

    _guarded(start)
    say(f"Serving durable-tasks metrics on http://{address}:{port}/metrics (Ctrl-C to stop).")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


from . import cli_cron, cli_events, cli_timers  # noqa: E402, F401  (register `durable cron|events|timers|kafka`)
