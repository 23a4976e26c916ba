"""The benchmark runs end to end (``benchmarks/run.py --quick``) and prints every table; no figure is judged.

Timing targets are never asserted in tests (the machines are shared and noisy): this only proves that the
benchmark still works against the current code, on real PostgreSQL, Redis and DBOS, in about a minute.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TABLES = ("Commit floor", "Table 1 - task steps", "Table 1b - task steps with several in flight",
          "Table 3 - growth", "Table 2 - inline steps")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_quick_benchmark_prints_every_table() -> None:
    pytest.importorskip("dbos", reason='the benchmark compares with DBOS: pip install -e ".[dev]"')
    # Redis databases no other test uses: the benchmark flushes them.
    done = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--broker-db", "10", "--results-db", "9"],
                          cwd=REPO, capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for title in TABLES:
        assert title in done.stdout, f"{title!r} missing from:\n{done.stdout[-3000:]}"
    for row in ("plain celery.chain", "durable, PostgreSQL", "durable, SQLite FULL", "durable-tasks", "DBOS",
                "one worker, --pool=prefork --concurrency=4", "two solo workers"):
        assert row in done.stdout, f"{row!r} missing"
    targets = [line for line in done.stdout.splitlines() if line.strip().startswith("target:")]
    assert len(targets) >= 8 and all(("met" in line) or ("missed" in line) for line in targets), targets
    assert "error" not in done.stdout.lower(), done.stdout[-3000:]
