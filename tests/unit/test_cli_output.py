"""What the journal holds is printed literally: never read as markup, never sent to the terminal as escapes.

Runs are made by the real API on a SQLite journal, with hostile text in workflow names, step keys, inputs,
results and errors; every command exits 0 (or 1 for a durable-tasks error) and shows the text as stored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from durable_tasks import Durable, RetryPolicy
from durable_tasks.cli import main
from durable_tasks.cli_console import neutralise
from durable_tasks.store import health_queries

# Markup that crashed rich (``[/]``, ``[/x]``), markup it would apply or swallow, emoji codes, terminal escapes,
# a bidi override, a carriage return, a newline.
HOSTILE = ['pip install "durable-tasks[postgres]" [/] [/x] [bold]b[/bold] [link=https://x]l[/link] :smile:',
           "\x1b[31mred\x1b[0m \x1b]0;title\x07 \u202eevil\rcr", "two\nlines"]
LONG = "long " * 2000  # 10,000 characters on one line
SURROGATE = "bytes \udcff\udc80 that were not UTF-8"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def shown(text: str, output: str) -> bool:
    """Every line of ``text`` appears in ``output``, with control characters as visible escapes."""
    return all(line in output for line in neutralise(text).split("\n"))


def assert_clean(result: Result, code: int = 0) -> None:
    assert result.exit_code == code, (result.output, result.exception)
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\r" not in stream and "\u202e" not in stream
        stream.encode("utf-8")  # no lone surrogate reached the terminal


@pytest.fixture
def runs(durable: Durable) -> dict[str, Any]:
    """A run failed in a step, one failed in the workflow's code, one succeeded: every journaled field hostile.

    Lone surrogates go where the journal stores JSON (inputs, results, run errors): a step's exception
    message with one cannot be journaled today (its attempt row is raw text).
    """
    name = " ".join(HOSTILE)

    @durable.workflow(name=f"failing {name}", retry=RetryPolicy(max_attempts=1))
    def failing(ctx: Any, *args: Any) -> None:
        ctx.step(f"ok {name}", lambda: HOSTILE[0][:40])

        def explode() -> None:
            raise RuntimeError(f"{name} {LONG}")

        ctx.step(f"boom {HOSTILE[0]}", explode)

    @durable.workflow(name=f"buggy {name}")
    def buggy(ctx: Any, *args: Any) -> None:
        raise ValueError(f"{name} {SURROGATE}")

    @durable.workflow(name=f"fine {name}")
    def fine(ctx: Any, *args: Any) -> dict[str, Any]:
        return {"echo": list(args)}

    handles = {"failed": failing.run(*HOSTILE, SURROGATE), "buggy": buggy.run(SURROGATE),
               "succeeded": fine.run(*HOSTILE, SURROGATE)}
    assert [handle.status for handle in handles.values()] == ["failed", "failed", "succeeded"]
    assert "RuntimeError" in str(handles["failed"].info().error), "failed in the step, not in journaling"
    with durable.store.begin() as conn:
        health_queries.heartbeat(conn, f"worker {HOSTILE[0]}", HOSTILE[1], 4242, time.time(), role=HOSTILE[2][:16],
                          interval=2, timeout=30)
    return {"store": durable.settings.store, "name": name, **{key: handle.id for key, handle in handles.items()}}


def test_runs_list_prints_hostile_text_literally(runs: dict[str, Any]) -> None:
    for extra in ([], ["--status", "failed"], ["--workflow", f"failing {runs['name']}"]):
        result = invoke("runs", "list", "--store", runs["store"], *extra)
        assert_clean(result)
        assert runs["failed"] in result.stdout and shown(f"failing {runs['name']}", result.stdout)
        assert 'builtins.RuntimeError: pip install "durable-tasks[postgres]' in result.stdout, "[postgres] stays"


def test_runs_show_prints_names_keys_inputs_results_and_errors_literally(runs: dict[str, Any]) -> None:
    result = invoke("runs", "show", runs["failed"], "--traceback", "--store", runs["store"])
    assert_clean(result)
    out = result.stdout
    assert shown(f"failing {runs['name']}", out) and shown(f"ok {runs['name']}", out)
    assert shown(f"boom {HOSTILE[0]}", out) and shown(HOSTILE[0][:40], out), "step keys and results"
    assert shown(f"RuntimeError: {runs['name']} {LONG}", out), "the error, whole and on its lines"
    assert shown(f"─── boom {HOSTILE[0]} attempt 1 (failed) ───", out), "the traceback's heading, whole"
    assert shown(f"RuntimeError: {runs['name']} {LONG}"[-500:], out), "the traceback (its last 8,000 characters)"
    assert json.dumps(HOSTILE[0])[:40] in out, "the input, as JSON"

    result = invoke("runs", "show", runs["buggy"], "--store", runs["store"])
    assert_clean(result)
    assert shown(f"builtins.ValueError: {runs['name']} {SURROGATE}", result.stdout)

    result = invoke("runs", "show", runs["succeeded"], "--store", runs["store"])
    assert_clean(result)
    assert shown(f"fine {runs['name']}", result.stdout) and '{"echo": ["pip install' in result.stdout


def test_workers_prints_hostnames_literally(runs: dict[str, Any]) -> None:
    result = invoke("workers", "--store", runs["store"])
    assert_clean(result)
    assert shown(f"worker {HOSTILE[0]}", result.stdout) and shown(HOSTILE[1], result.stdout)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_input_on_the_command_line_is_echoed_literally(runs: dict[str, Any], hostile: str) -> None:
    missing = invoke("runs", "show", hostile, "--store", runs["store"])
    assert_clean(missing, 1)
    assert missing.stdout == "" and missing.stderr.startswith("error: No run with id")
    retried = invoke("runs", "retry-step", runs["failed"], hostile, "--store", runs["store"])
    assert_clean(retried, 1)
    assert retried.stderr.startswith("error: ") and retried.stdout == ""


def test_input_that_is_not_utf8_is_a_usage_error(runs: dict[str, Any]) -> None:
    for args in (["runs", "show", SURROGATE], ["runs", "retry-step", runs["failed"], SURROGATE],
                 ["runs", "list", "--workflow", SURROGATE], ["runs", "fork", runs["failed"], "--from-step", SURROGATE]):
        result = invoke(*args, "--store", runs["store"])
        assert_clean(result, 2)
        assert "is not valid UTF-8 text" in result.stderr and neutralise(SURROGATE) in result.stderr


def test_operation_messages_echo_user_text_literally(runs: dict[str, Any]) -> None:
    step = f"boom {HOSTILE[0]}"
    retried = invoke("runs", "retry-step", runs["failed"], step, "--store", runs["store"])
    assert_clean(retried)
    assert retried.stdout.strip() == f"Step {step!r} of run {runs['failed']} runs again."
    cancelled = invoke("runs", "cancel", runs["failed"], "--reason", HOSTILE[1], "--store", runs["store"])
    assert_clean(cancelled)
    shown_run = invoke("runs", "show", runs["failed"], "--store", runs["store"])
    assert_clean(shown_run)
    assert shown(HOSTILE[1], shown_run.stdout), "the reason, journaled as the run's error"


def test_piped_output_keeps_a_suggested_command_on_one_line(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-directory-with-a-long-name"] * 8)
    url = f"sqlite:///{deep / 'journal.sqlite3'}"
    result = invoke("runs", "list", "--store", url)
    assert result.exit_code == 1 and result.stdout == ""
    line = next(line for line in result.stderr.splitlines() if "Create it with: " in line)
    command = line.split("Create it with: ", 1)[1]
    assert len(command) > 300 and command == f"durable db upgrade --store {url}"


def test_piped_tables_are_not_wrapped(runs: dict[str, Any]) -> None:
    out = invoke("runs", "show", runs["failed"], "--store", runs["store"]).stdout
    assert any(LONG.strip() in line for line in out.splitlines()), "a 10,000-character line stays one line"
