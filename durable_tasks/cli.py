"""The ``durable`` command: database migrations, the demo, and operating runs.

The store comes from ``-A APP`` (your Celery app or your :class:`~durable_tasks.Durable` instance, named as
``celery -A`` names an app), else from ``--store URL`` / ``$DURABLE_STORE``, else the default SQLite file.
These options go before or after the subcommand (``durable db upgrade --store URL``). Without ``-A`` the
commands that change runs leave their messages in the outbox, and the workers' relay sends them within a second.

Results go to stdout, errors to stderr (``error: ...``, exit status 1; usage errors exit with 2). Journaled
text is printed literally (see :mod:`durable_tasks.cli_console`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from .cli_console import (
    heading,
    literal,
    make_console,
    neutralise,
    say,
    tolerate_unencodable_output,
    warn_error,
)
from .cli_render import render_run, render_runs, render_steps, render_workers
from .durations import parse_duration
from .errors import DurableError
from .handle import RunRecord, load_run, load_steps
from .messages import Message
from .operations import Operations
from .outbox import UnitOfWork
from .store import queries
from .store.database import Store
from .store.engine import default_store_url
from .vocabulary import RunStatus

RUN_STATUSES = [status.value for status in RunStatus]
F = TypeVar("F", bound=Callable[..., Any])
_META = "durable_tasks.cli."  # prefix of our keys in click's ``ctx.meta``, shared by a command and its groups


class DeferredPublisher:
    """Publishes nothing: the messages stay in the outbox for the workers' relay."""

    def publish(self, message: Message) -> None:
        return None  # written with publish_after=now, so the next relay pass sends it


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
        return Context(durable.store, durable.operations, durable.settings.worker_timeout)
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


@runs.command("list")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs with this status.")
@click.option("--workflow", callback=_journal_text, help="Only runs of this workflow.")
@click.option("--limit", default=50, show_default=True)
@store_options
@click.pass_context
def runs_list(ctx: click.Context, status: str | None, workflow: str | None, limit: int) -> None:
    """The latest runs, newest first."""
    def read() -> list[Any]:
        with _context(ctx).store.read() as conn:
            return queries.list_runs(conn, status=status, workflow=workflow, limit=limit)

    rows = _guarded(read)
    make_console().print(render_runs([RunRecord.from_row(row) for row in rows]))


@runs.command("show")
@click.argument("run_id", callback=_journal_text)
@click.option("--traceback", "show_tracebacks", is_flag=True, help="Print the traceback of failed attempts.")
@store_options
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, show_tracebacks: bool) -> None:
    """A run with its steps, states, attempts and timings."""
    store = _context(ctx).store
    run = _guarded(lambda: load_run(store, run_id))
    steps = _guarded(lambda: load_steps(store, run_id))
    console = make_console()
    console.print(render_run(run))
    console.print(render_steps(steps))
    if show_tracebacks:
        for step in steps:
            for attempt in step.attempts:
                if attempt.traceback:
                    heading(console, f"{step.step_key} attempt {attempt.attempt} ({attempt.status})")
                    console.print(literal(attempt.traceback), soft_wrap=True)


def _operate(ctx: click.Context, call: Any, done: Any) -> None:
    """Run an operation; ``done(value)`` says what happened."""
    say(done(_guarded(lambda: call(_context(ctx).operations))))


@runs.command("resume")
@click.argument("run_id", callback=_journal_text)
@store_options
@click.pass_context
def runs_resume(ctx: click.Context, run_id: str) -> None:
    """Continue a failed run at its failed step (after you fixed the cause)."""
    _operate(ctx, lambda ops: ops.resume(run_id), lambda _: f"Run {run_id} resumes at its failed step.")


@runs.command("retry-step")
@click.argument("run_id", callback=_journal_text)
@click.argument("step", callback=_journal_text)
@store_options
@click.pass_context
def runs_retry_step(ctx: click.Context, run_id: str, step: str) -> None:
    """Run a failed step, or one waiting out its backoff, again now."""
    _operate(ctx, lambda ops: ops.retry_step(run_id, step), lambda _: f"Step {step!r} of run {run_id} runs again.")


@runs.command("cancel")
@click.argument("run_id", callback=_journal_text)
@click.option("--reason", default="cancelled by operator", show_default=True)
@store_options
@click.pass_context
def runs_cancel(ctx: click.Context, run_id: str, reason: str) -> None:
    """Cancel a run: nothing new starts, running steps can see it."""
    _operate(ctx, lambda ops: ops.cancel(run_id, reason), lambda _: f"Run {run_id} is cancelled.")


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
@store_options
@click.pass_context
def runs_prune(ctx: click.Context, older_than: str, status: str | None) -> None:
    """Delete finished runs (and their journals) older than the given age, in batches."""
    seconds = _guarded(lambda: parse_duration(older_than))
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
            return queries.list_workers(conn)

    rows = _guarded(read)
    make_console().print(render_workers(rows, time.time() - context.worker_timeout))


from . import cli_cron  # noqa: E402, F401  (registers `durable cron`; it uses the helpers above)

if __name__ == "__main__":
    main()
