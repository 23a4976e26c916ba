"""The commit floor of each store: one single-row INSERT transaction, measured in the benchmark's own run.

A durable step cannot cost less than plain Celery plus one durable commit, and what one commit costs moves a
lot on shared machines (from 0.2 to 1.8 ms on PostgreSQL between two days here), so every run measures it
next to the rest: PostgreSQL with the server's ``synchronous_commit``, SQLite in WAL mode with
``synchronous=FULL`` (durable-tasks' default) and with ``NORMAL``. Each figure is the median of ``count``
transactions made with the driver directly (psycopg 3, sqlite3): no SQLAlchemy, no durable-tasks code.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import psycopg_dsn


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def postgres_floor(url: str, schema: str, count: int) -> dict[str, float]:
    """Median ms of one INSERT + COMMIT, and of one ``SELECT 1`` round trip, on PostgreSQL."""
    import psycopg

    with psycopg.connect(psycopg_dsn(url), connect_timeout=10) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".floor (id serial PRIMARY KEY, at float8)')
        conn.commit()
        try:
            commits, trips = [], []
            for _ in range(count):
                begun = time.perf_counter()
                conn.execute(f'INSERT INTO "{schema}".floor (at) VALUES (%s)', (begun,))
                conn.commit()
                commits.append(time.perf_counter() - begun)
            for _ in range(count):
                begun = time.perf_counter()
                conn.execute("SELECT 1").fetchone()
                trips.append(time.perf_counter() - begun)
            conn.commit()
        finally:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.commit()
    return {"commit_ms": _median_ms(commits), "round_trip_ms": _median_ms(trips)}


def sqlite_floor(synchronous: str, count: int) -> dict[str, float]:
    """Median ms of one ``BEGIN IMMEDIATE`` + INSERT + COMMIT on a SQLite file in WAL mode."""
    folder = Path(tempfile.mkdtemp(prefix="durable-bench-floor-"))
    try:
        conn = sqlite3.connect(folder / "floor.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("CREATE TABLE floor (id INTEGER PRIMARY KEY, at REAL)")
        commits = []
        for _ in range(count):
            begun = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO floor (at) VALUES (?)", (begun,))
            conn.execute("COMMIT")
            commits.append(time.perf_counter() - begun)
        conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"commit_ms": _median_ms(commits), "round_trip_ms": 0.0}


def measure_floors(url: str, schema: str, count: int = 300) -> dict[str, dict[str, float]]:
    """The floor of every store the benchmark uses, keyed like ``benchmarks.common.MODE_FLOOR``'s values."""
    return {
        "postgresql": postgres_floor(url, schema, count),
        "sqlite-full": sqlite_floor("full", count),
        "sqlite-normal": sqlite_floor("normal", count),
    }
