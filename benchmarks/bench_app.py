"""The Celery app of the chain benchmark, shared by the benchmark process and its worker.

``benchmarks/run.py`` starts ``celery -A benchmarks.bench_app worker --pool=solo`` for each mode and imports
this module itself, so that both build the same app from the same environment variables:

``BENCH_MODE``
    ``plain`` (no durable-tasks at all, results in ``BENCH_BACKEND``) or ``durable``.
``BENCH_BROKER`` / ``BENCH_BACKEND``
    Redis URLs of the broker and (plain mode only) the result backend.
``BENCH_STORE`` / ``BENCH_SCHEMA``
    The durable store URL and, on PostgreSQL, the schema that holds its tables (durable mode only).
``BENCH_SQLITE_SYNC``
    SQLite's ``synchronous`` level for a SQLite store: ``full`` (durable-tasks' default) or ``normal``.
``BENCH_STATS_DIR``
    Where each worker writes ``ready-<pid>`` when it can take tasks, ``shutdown-<pid>.json`` when it stops,
    and the files that :func:`snapshot` is asked to write.

Every process that imports this module counts the task messages it publishes (Celery's
``before_task_publish`` signal); :func:`stats` returns that count with the durable store's commit counter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import Celery, signals

from durable_tasks import Durable

MODE = os.environ.get("BENCH_MODE", "plain")
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/13")
BACKEND = os.environ.get("BENCH_BACKEND", "redis://127.0.0.1:6379/12")
STORE = os.environ.get("BENCH_STORE", "")
SCHEMA = os.environ.get("BENCH_SCHEMA") or None
SQLITE_SYNC = os.environ.get("BENCH_SQLITE_SYNC") or "full"
STATS_DIR = Path(os.environ.get("BENCH_STATS_DIR", "."))

if MODE not in ("plain", "durable"):
    raise RuntimeError(f"BENCH_MODE must be 'plain' or 'durable', not {MODE!r}")

app = Celery("bench", broker=BROKER, backend=BACKEND if MODE == "plain" else None)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)

durable: Durable | None = (Durable(app, store=STORE, schema=SCHEMA, sqlite_synchronous=SQLITE_SYNC)
                           if MODE == "durable" else None)

_published = 0


@signals.before_task_publish.connect(weak=False)
def _count_publish(**_: Any) -> None:
    global _published
    _published += 1


def stats() -> dict[str, Any]:
    """Task messages published and store commits made by this process so far."""
    return {
        "pid": os.getpid(),
        "published": _published,
        "commits": durable.store.commits if durable is not None else 0,
        "autocommit_commits": durable.store.autocommit_commits if durable is not None else 0,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # readers never see a half-written file


@app.task(name="bench.inc")
def inc(value: int) -> int:
    """The no-op step: the previous result plus one."""
    return value + 1


if durable is not None:
    inc = durable.step(inc)

    @durable.workflow(name="bench.loop")
    def loop(ctx: Any, steps: int) -> int:
        """The workflow equivalent of a chain of ``steps`` no-op tasks (the growth table)."""
        value = 0
        for _ in range(steps):
            value = ctx.run(inc, value)
        return value


@app.task(name="bench.snapshot", ignore_result=True)
def snapshot(name: str) -> None:
    """Write this worker's counters to ``STATS_DIR/name`` (queued behind the tasks sent before it)."""
    _write_json(STATS_DIR / name, stats())


@signals.worker_ready.connect(weak=False)
def _on_ready(**_: Any) -> None:
    _write_json(STATS_DIR / f"ready-{os.getpid()}", stats())


@signals.worker_shutdown.connect(weak=False)
def _on_shutdown(**_: Any) -> None:
    _write_json(STATS_DIR / f"shutdown-{os.getpid()}.json", stats())
