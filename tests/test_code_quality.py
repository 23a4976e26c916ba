"""The code bar as tests, so CI enforces it: ruff-clean and fully typed (mypy on the package)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "durable_tasks", "integrations", "migrations", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_imports_no_kafka_flower_or_redis() -> None:
    outside = re.compile(r"^\s*(?:import|from)\s+(?:confluent_kafka|flower|redis|kafka)\b")
    offenders = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in (ROOT / "durable_tasks").rglob("*.py")
        for line in path.read_text().splitlines()
        if outside.match(line)
    ]
    assert offenders == []
