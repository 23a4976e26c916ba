"""The ``durable`` command: database migrations, the demo, and operating runs.

The store comes from ``--app module:durable`` (your :class:`~durable_tasks.Durable` instance), else from
``--store URL`` / ``$DURABLE_STORE``, else the default SQLite file. Without ``--app`` the commands that
change runs leave their messages in the outbox, and the workers' relay sends them within a second.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console

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
console = Console(width=None if sys.stdout.isatty() else 160)


class DeferredPublisher:
    """Publishes nothing: the messages stay in the outbox for the workers' relay."""

    def publish(self, message: Message) -> None:
        return None  # written with publish_after=now, so the next relay pass sends it


@dataclass
class Context:
    store: Store
    operations: Operations
    worker_timeout: float


def _load_durable(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint="--app") from exc
    candidates = [attribute] if attribute else ["durable"]
    for name in candidates:
        value = getattr(module, name, None)
        if value is not None and hasattr(value, "operations"):
            return value
    raise click.BadParameter(f"{spec!r} names no Durable instance (use module:attribute)", param_hint="--app")


@click.group()
@click.option("--app", "app_spec", metavar="MODULE[:ATTR]", help="Your Durable instance, e.g. proj.tasks:durable.")
@click.option("--store", envvar="DURABLE_STORE", metavar="URL", help="Journal database URL ($DURABLE_STORE).")
@click.option("--schema", default=None, help="PostgreSQL schema of the tables.")
@click.pass_context
def main(ctx: click.Context, app_spec: str | None, store: str | None, schema: str | None) -> None:
    """durable-tasks: durable workflows and chains for Celery."""
    sys.path.insert(0, ".")

    def build() -> Context:
        if app_spec:
            durable = _load_durable(app_spec)
            return Context(durable.store, durable.operations, durable.settings.worker_timeout)
        journal = Store(store or default_store_url(), schema=schema)
        operations = Operations(journal, lambda: UnitOfWork(journal, DeferredPublisher(), redelivery_after=0))
        return Context(journal, operations, 30.0)

    ctx.obj = build


def _context(ctx: click.Context) -> Context:
    root = ctx.find_root()
    if isinstance(root.obj, Context):
        return root.obj
    root.obj = root.obj()
    return root.obj


def _guarded(call: Any) -> Any:
    """``call()``; a durable-tasks error is printed as ``error: ...`` and exits with status 1."""
    try:
        return call()
    except DurableError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(1) from None


# --- db --------------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Create, upgrade and check the journal tables."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every missing migration (safe to run again)."""
    store = _context(ctx).store
    _guarded(store.upgrade)
    console.print(f"Journal tables are up to date in {store.redacted_url()}.")


@db.command("check")
@click.pass_context
def db_check(ctx: click.Context) -> None:
    """Exit 1 unless the tables are at this version's migration head."""
    store = _context(ctx).store
    _guarded(store.ensure_ready)
    console.print(f"{store.redacted_url()} is up to date.")


# --- demo ------------------------------------------------------------------------------------------------


@main.command()
def demo() -> None:
    """Run a workflow, kill -9 its worker mid-run, and watch it resume (no server needed)."""
    from .demo import run_demo

    raise SystemExit(0 if run_demo(console.print) else 1)


# --- runs ------------------------------------------------------------------------------------------------


@main.group()
def runs() -> None:
    """List, inspect and operate runs."""


@runs.command("list")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs with this status.")
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--limit", default=50, show_default=True)
@click.pass_context
def runs_list(ctx: click.Context, status: str | None, workflow: str | None, limit: int) -> None:
    """The latest runs, newest first."""
    def read() -> list[Any]:
        with _context(ctx).store.read() as conn:
            return queries.list_runs(conn, status=status, workflow=workflow, limit=limit)

    rows = _guarded(read)
    console.print(render_runs([RunRecord.from_row(row) for row in rows]))


@runs.command("show")
@click.argument("run_id")
@click.option("--traceback", "show_tracebacks", is_flag=True, help="Print the traceback of failed attempts.")
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, show_tracebacks: bool) -> None:
    """A run with its steps, states, attempts and timings."""
    store = _context(ctx).store
    run = _guarded(lambda: load_run(store, run_id))
    steps = _guarded(lambda: load_steps(store, run_id))
    console.print(render_run(run))
    console.print(render_steps(steps))
    if show_tracebacks:
        for step in steps:
            for attempt in step.attempts:
                if attempt.traceback:
                    console.rule(f"{step.step_key} attempt {attempt.attempt} ({attempt.status})")
                    console.print(attempt.traceback, markup=False, highlight=False)


def _operate(ctx: click.Context, call: Any, done: Any) -> None:
    """Run an operation; ``done(value)`` says what happened."""
    console.print(done(_guarded(lambda: call(_context(ctx).operations))))


@runs.command("resume")
@click.argument("run_id")
@click.pass_context
def runs_resume(ctx: click.Context, run_id: str) -> None:
    """Continue a failed run at its failed step (after you fixed the cause)."""
    _operate(ctx, lambda ops: ops.resume(run_id), lambda _: f"Run {run_id} resumes at its failed step.")


@runs.command("retry-step")
@click.argument("run_id")
@click.argument("step")
@click.pass_context
def runs_retry_step(ctx: click.Context, run_id: str, step: str) -> None:
    """Run a failed step, or one waiting out its backoff, again now."""
    _operate(ctx, lambda ops: ops.retry_step(run_id, step), lambda _: f"Step {step!r} of run {run_id} runs again.")


@runs.command("cancel")
@click.argument("run_id")
@click.option("--reason", default="cancelled by operator", show_default=True)
@click.pass_context
def runs_cancel(ctx: click.Context, run_id: str, reason: str) -> None:
    """Cancel a run: nothing new starts, running steps can see it."""
    _operate(ctx, lambda ops: ops.cancel(run_id, reason), lambda _: f"Run {run_id} is cancelled.")


@runs.command("fork")
@click.argument("run_id")
@click.option("--from-step", "from_step", required=True, help="The first step to run again.")
@click.pass_context
def runs_fork(ctx: click.Context, run_id: str, from_step: str) -> None:
    """Start a new run that reuses the journal before STEP (replay after a fix)."""
    _operate(ctx, lambda ops: ops.fork(run_id, from_step),
             lambda new_id: f"Forked run {run_id} from step {from_step!r} as run {new_id}.")


@runs.command("prune")
@click.option("--older-than", "older_than", required=True, help="Age such as 30d or 12h.")
@click.option("--status", type=click.Choice(["succeeded", "failed", "cancelled"]), help="Only this status.")
@click.pass_context
def runs_prune(ctx: click.Context, older_than: str, status: str | None) -> None:
    """Delete finished runs (and their journals) older than the given age, in batches."""
    seconds = _guarded(lambda: parse_duration(older_than))
    _operate(ctx, lambda ops: ops.prune(seconds, status),
             lambda deleted: f"Deleted {deleted} finished run(s) older than {older_than}.")


@main.command()
@click.pass_context
def workers(ctx: click.Context) -> None:
    """Worker processes known by their heartbeats."""
    context = _context(ctx)

    def read() -> list[Any]:
        with context.store.read() as conn:
            return queries.list_workers(conn)

    rows = _guarded(read)
    console.print(render_workers(rows, time.time() - context.worker_timeout))


if __name__ == "__main__":
    main()
