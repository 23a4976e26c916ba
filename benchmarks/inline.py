"""Table 2, in a child process: workflows of inline steps, durable-tasks against DBOS."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    WORKFLOW_STEPS,
    percentile,
    pg_execute,
    quietly,
)

# --- table 2: inline steps, durable-tasks vs DBOS (child process) --------------------------------------

@dataclass
class InlineResult:
    system: str
    engine: str
    sync: str = ""
    workflows: int = 0
    steps: int = 0
    wall: float = 0.0
    steps_per_s: float = 0.0
    workflow_p50_ms: float = 0.0
    workflow_p99_ms: float = 0.0
    commits_per_step: float = 0.0
    error: str | None = None


def bump(value: int) -> int:
    """The inline step: a trivial function returning a small value."""
    return value + 1


def time_workflows(call: Callable[[], Any], count: int, deadline: float) -> list[float]:
    """Call ``call`` ``count`` times, one after another; returns each call's seconds."""
    durations: list[float] = []
    for _ in range(count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(durations)} of {count} workflows ran within the time budget")
        begun = time.perf_counter()
        call()
        durations.append(time.perf_counter() - begun)
    return durations


def fill_inline(result: InlineResult, durations: list[float], commits: int) -> None:
    result.workflows = len(durations)
    result.steps = len(durations) * WORKFLOW_STEPS
    result.wall = sum(durations)
    result.steps_per_s = result.steps / result.wall
    result.workflow_p50_ms = percentile(durations, 0.50) * 1000
    result.workflow_p99_ms = percentile(durations, 0.99) * 1000
    result.commits_per_step = commits / result.steps


def inline_durable(args: argparse.Namespace, workdir: Path, deadline: float) -> InlineResult:
    from celery import Celery

    from durable_tasks import Durable

    result = InlineResult("durable-tasks", args.engine, args.sync if args.engine == "sqlite" else "")
    if args.engine == "postgresql":
        pg_execute(args.pg, f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        store, schema = args.pg, args.schema
    else:
        store, schema = f"sqlite:///{workdir / 'durable.sqlite3'}", None
    app = Celery("bench-inline", broker=f"{args.redis}/{args.broker_db}")
    durable = Durable(app, store=store, schema=schema, worker_services=False, sqlite_synchronous=args.sync)
    try:
        durable.upgrade_database()

        @durable.workflow(name="bench.ten_inline_steps")
        def ten_steps(ctx: Any, start: int) -> int:
            value = start
            for _ in range(WORKFLOW_STEPS):
                value = ctx.step("bump", bump, value)
            return value

        def call() -> None:
            value = ten_steps.run(0).result()
            if value != WORKFLOW_STEPS:
                raise RuntimeError(f"workflow returned {value!r}")

        for _ in range(args.warmup):
            call()
        commits = durable.store.commits
        durations = time_workflows(call, args.workflows, deadline)
        fill_inline(result, durations, durable.store.commits - commits)
    finally:
        durable.close()
        if args.engine == "postgresql":
            quietly(pg_execute, args.pg, f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
    return result


def inline_dbos(args: argparse.Namespace, workdir: Path, deadline: float) -> InlineResult:
    from dbos import DBOS
    from sqlalchemy import Engine, event

    result = InlineResult("DBOS", args.engine, "full" if args.engine == "sqlite" else "")
    commits = 0

    def count_commit(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(Engine, "commit", count_commit)  # DBOS's own engines are the only ones in this process
    if args.engine == "postgresql":
        pg_execute(args.pg, f'DROP DATABASE IF EXISTS "{args.dbos_database}" WITH (FORCE)',
                   f'CREATE DATABASE "{args.dbos_database}"')
        from sqlalchemy.engine import make_url

        url = make_url(args.pg).set(database=args.dbos_database).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{workdir / 'dbos.sqlite3'}"
    try:
        DBOS(config={"name": "durable-bench", "system_database_url": url, "log_level": "WARNING"})

        @DBOS.step()
        def dbos_bump(value: int) -> int:
            return bump(value)

        @DBOS.workflow()
        def ten_steps(start: int) -> int:
            value = start
            for _ in range(WORKFLOW_STEPS):
                value = dbos_bump(value)
            return value

        DBOS.launch()

        def call() -> None:
            value = ten_steps(0)
            if value != WORKFLOW_STEPS:
                raise RuntimeError(f"workflow returned {value!r}")

        for _ in range(args.warmup):
            call()
        before = commits
        durations = time_workflows(call, args.workflows, deadline)
        fill_inline(result, durations, commits - before)
    finally:
        DBOS.destroy(destroy_registry=True)
        if args.engine == "postgresql":
            quietly(pg_execute, args.pg, f'DROP DATABASE IF EXISTS "{args.dbos_database}" WITH (FORCE)')
    return result


def inline_child(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.budget
    workdir = Path(tempfile.mkdtemp(prefix=f"durable-bench-inline-{args.system}-"))
    try:
        run = inline_durable if args.system == "durable" else inline_dbos
        return asdict(run(args, workdir, deadline))
    except Exception as exc:
        system = "durable-tasks" if args.system == "durable" else "DBOS"
        return asdict(InlineResult(system, args.engine, error=f"{type(exc).__name__}: {exc}"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


