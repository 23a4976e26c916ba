"""Constants and helpers shared by the benchmark's parent and child processes."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
CHAIN_LENGTH = 10
WORKFLOW_STEPS = 10

# mode -> (BENCH_MODE of the worker app, store engine, SQLite synchronous level)
CHAIN_MODES: dict[str, tuple[str, str | None, str]] = {
    "plain": ("plain", None, ""),
    "durable-pg": ("durable", "postgresql", ""),
    "durable-sqlite": ("durable", "sqlite", "full"),
    "durable-sqlite-normal": ("durable", "sqlite", "normal"),
}
CHAIN_LABELS = {"plain": "plain celery.chain", "durable-pg": "durable, PostgreSQL",
                "durable-sqlite": "durable, SQLite FULL", "durable-sqlite-normal": "durable, SQLite NORMAL"}
# The commit floor each durable mode is compared with (keys of benchmarks.floor.measure_floors).
MODE_FLOOR = {"durable-pg": "postgresql", "durable-sqlite": "sqlite-full", "durable-sqlite-normal": "sqlite-normal"}

# setup -> (pool, concurrency, workers, task events): how table 1's workers run.
SETUPS: dict[str, tuple[str, int, int, bool]] = {
    "solo": ("solo", 1, 1, False),
    "solo-events": ("solo", 1, 1, True),
    "prefork4": ("prefork", 4, 1, False),
    "two-workers": ("solo", 1, 2, False),
}
SETUP_LABELS = {"solo": "one solo worker", "solo-events": "one solo worker with -E",
                "prefork4": "one worker, --pool=prefork --concurrency=4", "two-workers": "two solo workers"}

ENGINES = ("postgresql", "sqlite")
ENGINE_LABELS = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
INLINE_STORES = ("postgresql", "sqlite-full", "sqlite-normal")  # what durable-tasks runs table 2 on
STORE_LABELS = {"postgresql": "PostgreSQL", "sqlite-full": "SQLite FULL", "sqlite-normal": "SQLite NORMAL"}

TARGET_RATIO_PG = 0.8  # durable.chain steps/s over plain at concurrency 4, PostgreSQL
TARGET_SOLO_EXTRA_MS = 0.5  # solo, PostgreSQL: ms/step within plain + one commit floor + this
TARGET_LATENCY_EXTRA_MS = 1.0  # added p50 ms/step within one commit floor + this
TARGET_GROWTH_CHAIN = 1.2  # ms/step at the longest run over the shortest, chains
TARGET_GROWTH_WORKFLOW = 1.5  # the same for workflows
TARGET_MESSAGES = 1.0
TARGET_COMMITS = 2.0
TARGET_DBOS_RATIO = 2.0


# --- shared helpers ------------------------------------------------------------------------------------

def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def psycopg_dsn(url: str) -> str:
    """A libpq URL for psycopg from a SQLAlchemy URL such as ``postgresql+psycopg://...``."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_execute(url: str, *statements: str) -> None:
    """Run statements in autocommit mode (DDL such as CREATE/DROP DATABASE) with a bounded lock wait."""
    import psycopg

    with psycopg.connect(psycopg_dsn(url), autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET lock_timeout = '20s'")
        for statement in statements:
            conn.execute(statement)


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()


def quietly(cleanup: Callable[..., Any], *args: Any) -> None:
    """Run a clean-up step; report a failure on stderr instead of hiding the measurement's own outcome."""
    try:
        cleanup(*args)
    except Exception as exc:
        print(f"clean-up {cleanup.__name__}{args!r} failed: {exc}", file=sys.stderr)


def process_tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by process ``root`` and its live descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1] is the parent pid
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def wait_for_file(path: Path, deadline: float, alive: Callable[[], bool], what: str) -> dict[str, Any]:
    """Poll for a JSON file written by the worker; fail early when the worker died."""
    while not path.exists():
        if not alive():
            raise RuntimeError(f"the worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


