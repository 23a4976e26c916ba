"""docs/quickstart.md, run as a new user would: its files, its commands as printed, the output it promises.

The code blocks are read from the page itself, so the page and the product cannot drift apart. The only
change made to them is the Redis database of the broker (a database of the tests' own), and PostgreSQL
commands run with ``PGOPTIONS`` pointing the search path at a schema of the test's own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy

from tests.support.stack import POSTGRES_URL, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = (ROOT / "docs" / "quickstart.md").read_text()
DOC_BROKER = "redis://127.0.0.1:6379/0"
TEST_BROKER = "redis://127.0.0.1:6379/12"


def code_block(first_line: str) -> str:
    """The fenced block whose first line is ``first_line``."""
    for block in re.findall(r"```\w*\n(.*?)```", PAGE, re.S):
        if block.splitlines()[0].strip() == first_line:
            return str(block)
    raise AssertionError(f"docs/quickstart.md has no code block starting with {first_line!r}")


def commands(section: str) -> list[str]:
    """The shell commands of the ``bash`` blocks in a section of the page."""
    body = PAGE.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", body, re.S)
             for line in block.splitlines()]
    return [line for line in lines if line]


def shell(command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, shell=True, cwd=cwd, env=env or os.environ.copy(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def project(services: None, tmp_path: Path) -> Iterator[Path]:
    broker = redis.Redis.from_url(TEST_BROKER)
    broker.flushdb()
    for name in ("proj.py", "start.py"):
        (tmp_path / name).write_text(code_block(f"# {name}").replace(DOC_BROKER, TEST_BROKER))
    yield tmp_path
    broker.flushdb()


def test_the_demo_and_its_journal_commands(tmp_path: Path) -> None:
    demo = commands("2. Watch the demo")
    assert demo[:2] == ['cd "$(mktemp -d)"', "durable demo"]
    result = shell("durable demo", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    promised = code_block("[5/5] Run succeeded: {'payment': {'charged': 42.5, 'receipt': 'R-1001'}, "
                          "'mail': 'mail sent for order 1001'}")
    for line in promised.splitlines():
        if line.strip() and line.strip() != "..." and not line.startswith("│"):
            assert line in result.stdout, f"the demo no longer prints {line!r}"
    assert "│ durable_tasks.demo.charge_card │ task │ succeeded │ 2 (lost succeeded) │" in result.stdout
    listed, shown = commands("2. Watch the demo")[2:]
    listing = shell(listed, cwd=tmp_path)
    assert listing.returncode == 0 and "demo.checkout" in listing.stdout and "succeeded" in listing.stdout
    run_id = re.search(r"Started run ([0-9a-f-]{36})", result.stdout).group(1)  # type: ignore[union-attr]
    showing = shell(shown.replace("<RUN_ID>", run_id), cwd=tmp_path)
    assert showing.returncode == 0 and "durable_tasks.demo.save_order" in showing.stdout


def test_proj_and_start_print_what_the_page_promises(project: Path) -> None:
    worker_command, start_command = commands("6. Run the worker")[:2]
    assert (worker_command, start_command) == ("celery -A proj worker --loglevel=info", "python start.py")
    env = {**os.environ, "PYTHONPATH": str(project)}
    worker = subprocess.Popen(worker_command.split(), cwd=project, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = shell(start_command, cwd=project, env=env)
        assert first.returncode == 0, first.stderr
        expected = code_block("5f0c... pending").splitlines()
        lines = first.stdout.splitlines()
        assert re.fullmatch(r"[0-9a-f-]{36} pending", lines[0]), lines[0]
        assert lines[1:] == expected[1:]
        again = shell(start_command, cwd=project, env=env)
        assert again.stdout.splitlines()[0].endswith(" succeeded"), "the same key returns the finished run"

        run_id = lines[0].split()[0]
        for command in commands("6. Run the worker")[2:]:
            done = shell(command.replace("<RUN_ID>", run_id), cwd=project, env=env)
            assert done.returncode == 0, f"{command}: {done.stderr}"
        shown = shell(f"durable runs show {run_id}", cwd=project, env=env).stdout
        assert "proj.charge_card" in shown and "cool-off" in shown and "summarise" in shown
        workers = shell("durable workers", cwd=project, env=env).stdout
        assert "worker" in workers and "pool" in workers and "client" in workers
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    stopped = shell("durable workers", cwd=project, env=env).stdout
    assert "live" not in stopped.split("state", 1)[1] and "stopped" in stopped, "a warm shutdown says stopped"


def test_the_postgresql_commands_run_as_printed(services: None, tmp_path: Path) -> None:
    schema = f"dt_doc_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    env = {**os.environ, "PGOPTIONS": f"-c search_path={schema}"}
    try:
        upgrade, check = commands("7. Use PostgreSQL")
        assert shell(check, cwd=tmp_path, env=env).returncode == 1, "db check fails before the upgrade"
        done = shell(upgrade, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert shell(check, cwd=tmp_path, env=env).returncode == 0
        with engine.connect() as conn:
            tables = set(conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)).scalars())
        assert "durable_runs" in tables
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
