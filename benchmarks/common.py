"""Constants and helpers shared by the benchmark's parent and child processes."""

from __future__ import annotations

import json
import math
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

# mode -> (BENCH_MODE of the worker app, store engine)
CHAIN_MODES: dict[str, tuple[str, str | None]] = {
    "plain": ("plain", None),
    "durable-pg": ("durable", "postgresql"),
    "durable-sqlite": ("durable", "sqlite"),
}
CHAIN_LABELS = {"plain": "plain celery.chain", "durable-pg": "durable.chain, PostgreSQL",
                "durable-sqlite": "durable.chain, SQLite"}
ENGINES = ("postgresql", "sqlite")
ENGINE_LABELS = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}

TARGET_RATIO_PG = 0.8
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


