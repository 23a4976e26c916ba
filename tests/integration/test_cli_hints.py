"""Every ``durable ...`` command a message suggests works when pasted into a shell, exactly as printed.

Each test triggers the message through the real API, takes the command out of it, runs it in a real process
(the ``durable`` script of this environment, found first on PATH) and checks that it did what it promised.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from celery import Celery

from durable_tasks import Durable, InvalidStateError, ResultTimeoutError, RetryPolicy, SchemaError, WorkflowFailedError
from durable_tasks.store import migrate
from durable_tasks.store.database import Store
from durable_tasks.store.engine import make_engine
from tests.support.stack import POSTGRES_URL

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as a user's shell would, with this environment's ``durable`` and no $DURABLE_STORE."""
    env = {key: value for key, value in os.environ.items() if key != "DURABLE_STORE"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(shlex.split(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def suggested(message: str) -> str:
    """The ``durable ...`` command in a message: after "with: " to the end, or between backquotes."""
    found = re.search(r"with: (durable .+)$", message) or re.search(r"`(durable [^`]+)`", message)
    assert found, f"no durable command in {message!r}"
    return found.group(1)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(URL, schema) of an empty store: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh' / 'journal.sqlite3'}", None
        return
    request.getfixturevalue("services")
    schema = f"dt_hint_{uuid.uuid4().hex[:8]}"
    yield POSTGRES_URL, schema
    cleanup = sqlalchemy.create_engine(POSTGRES_URL)
    with cleanup.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    cleanup.dispose()


def assert_usable(url: str, schema: str | None) -> None:
    """A Durable on the store starts and finishes a run."""
    app = Celery("hints", broker="memory://", set_as_current=False)
    durable = Durable(app, store=url, schema=schema)
    try:
        @durable.workflow(name="hints.ping")
        def ping(ctx: Any) -> str:
            return str(ctx.step("pong", lambda: "pong"))

        assert ping.run().result(timeout=5) == "pong"
    finally:
        durable.close()


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("state", ["no tables", "older migration"])
def test_schema_error_command_upgrades_the_store(store_url: tuple[str, str | None], state: str,
                                                 tmp_path: Path) -> None:
    url, schema = store_url
    if state == "older migration":
        writer = make_engine(url, schema=schema)
        migrate.upgrade(writer, schema, revision="0001")
        writer.dispose()
    store = Store(url, schema=schema)
    try:
        with pytest.raises(SchemaError) as raised:
            store.ensure_ready()
    finally:
        store.dispose()
    message = str(raised.value)
    expected = {"no tables": "Create them with: " if schema else "Create it with: ",  # a missing SQLite file
                "older migration": "Apply the missing migrations with: "}[state]
    assert expected in message
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = shell(suggested(message), cwd=elsewhere)  # not the worker's directory: the command names the store
    assert done.returncode == 0, done.stderr
    assert "Journal tables are up to date" in done.stdout and done.stderr == ""
    assert_usable(url, schema)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_schema_error_hides_the_password_and_says_where_it_goes(store_url: tuple[str, str | None],
                                                                tmp_path: Path) -> None:
    url, schema = store_url
    with_password = url.replace("postgres@", "postgres:s3cret@", 1)  # trust auth ignores it
    assert with_password != url
    store = Store(with_password, schema=schema)
    try:
        with pytest.raises(SchemaError) as raised:
            store.ensure_ready()
    finally:
        store.dispose()
    message = str(raised.value)
    assert "s3cret" not in message and message.endswith(" (put the password in place of ***)")
    command = suggested(message).removesuffix(" (put the password in place of ***)").replace("***", "s3cret")
    done = shell(command, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_usable(url, schema)


@pytest.fixture
def default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Durable]:
    """A Durable on the default store (./durable.sqlite3) in a fresh working directory."""
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    app = Celery("hints", broker="memory://", set_as_current=False)
    durable = Durable(app, auto_migrate=True)
    yield durable
    durable.close()


def test_failed_run_message_resumes_the_run(default_store: Durable, tmp_path: Path) -> None:
    @default_store.workflow(name="hints.fails", retry=RetryPolicy(max_attempts=1))
    def fails(ctx: Any) -> None:
        ctx.step("broken", lambda: 1 / 0)

    handle = fails.run()
    with pytest.raises(WorkflowFailedError) as raised:
        handle.result(timeout=5)
    done = shell(suggested(str(raised.value)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert handle.status == "running", "resumed: its advance waits in the outbox for a worker's relay"


def test_result_timeout_message_shows_the_run(default_store: Durable, tmp_path: Path) -> None:
    @default_store.workflow(name="hints.waits")
    def waits(ctx: Any) -> None:
        ctx.sleep("nap", "1 hour")

    with pytest.raises(ResultTimeoutError) as raised:
        waits.start().result(timeout=0.01)
    done = shell(suggested(str(raised.value)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("state", ["finished", "active"])
def test_refused_resume_suggests_a_command_that_runs(default_store: Durable, tmp_path: Path, state: str) -> None:
    def one() -> int:
        if state == "active":
            raise ConnectionError("down for now")
        return 1

    @default_store.workflow(name=f"hints.{state}", retry=RetryPolicy(max_attempts=3, initial="1h"))
    def flow(ctx: Any) -> int:
        return int(ctx.step("one", one))

    handle = flow.run()
    with pytest.raises(InvalidStateError) as raised:
        default_store.resume(handle.id)
    assert ("fork" if state == "finished" else "retry-step") in str(raised.value)
    done = shell(suggested(str(raised.value)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_errors_go_to_stderr_and_commands_stay_on_one_line_in_a_real_pipe(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-directory-with-a-long-name"] * 8)
    url = f"sqlite:///{deep / 'journal.sqlite3'}"
    failed = shell(f"durable runs list --store {url}", cwd=tmp_path)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("error: The durable store ") and failed.stderr.count("\n") == 1
    assert failed.stderr.rstrip("\n").endswith(f"Create it with: durable db upgrade --store {url}")
    usage = shell("durable runs list --status bogus", cwd=tmp_path)
    assert usage.returncode == 2 and usage.stdout == "" and "Invalid value for '--status'" in usage.stderr
