"""``durable cron``: the importer on a sample beat app (print, then --apply and a fired tick), and the operator
commands. Every command a message of theirs suggests is run here as printed."""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner, Result

from durable_tasks import Durable
from durable_tasks.cli import main
from durable_tasks.coordinator import advance
from durable_tasks.integrations.beat import read_beat_schedule, render_declarations
from durable_tasks.messages import StepMessage
from durable_tasks.scheduler import fire_due, spec_of
from durable_tasks.store import schedule_queries
from durable_tasks.task_step import execute
from tests.support.publisher import KeptMessages


def invoke(store: str, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"DURABLE_STORE": store})


def suggested(message: str) -> list[str]:
    """The ``durable ...`` command between backquotes in a message, as arguments (without ``durable``)."""
    found = re.search(r"`durable ([^`]+)`", message)
    assert found, f"no durable command in {message!r}"
    return shlex.split(found.group(1))


SAMPLE = '''
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab, solar

from durable_tasks import Durable
from tests.support.publisher import KeptMessages
from tests.support.publisher import KeptMessages

app = Celery("{name}", broker="memory://", set_as_current=False)
app.conf.timezone = "Europe/Berlin"
durable = Durable(app, store="{store}")
ran = []


@durable.step
@app.task(name="proj.tasks.report", shared=False)
def report(team):
    ran.append(team)
    return f"report for {{team}}"


@durable.step
@app.task(name="proj.tasks.sync_inventory", shared=False)
def sync_inventory():
    ran.append("sync")
    return "synced"


@app.task(name="proj.tasks.plain", shared=False)
def plain():
    return None


@app.task(name="proj.tasks.lights", shared=False)
def lights():
    return None


app.conf.beat_schedule = {{
    "weekly-report": {{"task": "proj.tasks.report", "schedule": crontab(minute=0, hour=9, day_of_week="mon"),
                       "args": ("sales",)}},
    "sync-inventory": {{"task": "proj.tasks.sync_inventory", "schedule": timedelta(minutes=15)}},
    "plain-job": {{"task": "proj.tasks.plain", "schedule": 3600}},
    "evening-lights": {{"task": "proj.tasks.lights", "schedule": solar("sunset", 52.52, 13.405)}},
}}
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, ModuleType]]:
    """(module name, store URL, module) of a beat app whose Durable journals in a fresh SQLite file."""
    name = f"beatproj_{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{tmp_path / 'cron.sqlite3'}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SAMPLE.format(name=name, store=store)))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    module.durable.runtime.publisher = KeptMessages()
    yield name, store, module
    sys.modules.pop(name, None)
    module.durable.close()


def test_import_prints_the_declarations_the_importer_renders(project: tuple[str, str, ModuleType]) -> None:
    name, store, module = project
    printed = invoke(store, "cron", "import", "-A", name)
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == render_declarations(read_beat_schedule(module.app))
    assert '    name="weekly-report",\n    args=["sales"],\n)(app.tasks["proj.tasks.report"])' in printed.stdout
    assert "# - evening-lights: solar('sunset', 52.52, 13.405) follows the sun" in printed.stdout


def test_import_apply_writes_schedules_of_step_tasks_and_a_tick_fires(project: tuple[str, str, ModuleType]) -> None:
    name, store, module = project
    applied = invoke(store, "cron", "import", "-A", name, "--apply")
    assert applied.exit_code == 0, applied.output
    lines = applied.stdout.splitlines()
    assert lines[0].startswith("Applied 2 schedule(s) to sqlite:///")
    assert lines[0].endswith(": weekly-report, sync-inventory. Any worker of the app fires them from now on; delete "
                             f"these entries from beat_schedule. `durable cron list -A {name}` shows them.")
    assert lines[1:3] == ["Not applied:", "- plain-job: task 'proj.tasks.plain' is not a durable step, so a schedule "
                          "could not journal its result. Paste its declaration (durable cron import without --apply "
                          "prints it) into a module every worker imports: durable.cron(...)(task) makes the task a "
                          "durable step there. Or decorate the task with @durable.step and apply again."]
    assert lines[3:5] == ["Left in beat (not converted):", "- evening-lights: solar('sunset', 52.52, 13.405) follows "
                          "the sun, which moves every day; it is not a cron expression or an interval. Keep it in "
                          "beat."]
    listed = invoke(store, *suggested(lines[0]))
    assert listed.exit_code == 0 and "sync-inventory" in listed.stdout and "task proj.tasks.report" in listed.stdout

    durable: Durable = module.durable
    with durable.store.read() as conn:
        row = schedule_queries.get_schedule(conn, "sync-inventory")
    assert (row.source, row.app, row.every) == ("import", name, 900.0)
    tick = spec_of(row).next_tick(time.time())
    assert tick is not None and fire_due(durable.runtime, now=tick + 1) == 1
    (run,) = [run for run in durable.runs() if run.workflow == "durable_tasks.task"]
    advance(durable.runtime, run.id)
    (message,) = [m for m in durable.runtime.publisher.messages if isinstance(m, StepMessage)]  # type: ignore[attr-defined]
    task = module.app.tasks[message.task]
    execute(durable.runtime, task, message, task.run)
    assert module.ran == ["sync"] and durable.run(run.id).result(timeout=1) == "synced"
    again = invoke(store, "cron", "import", "-A", name, "--apply")
    assert again.exit_code == 0 and again.stdout.startswith("Applied 2 schedule(s)"), "applying again is harmless"


def test_import_needs_the_app(project: tuple[str, str, ModuleType]) -> None:
    _, store, _ = project
    result = invoke(store, "cron", "import")
    assert result.exit_code == 2 and "name it with -A, e.g. durable cron import -A proj.celery" in result.output


@pytest.fixture
def scheduled(durable: Durable, tasks: dict[str, Any], tmp_path: Path) -> str:
    """The store URL of a Durable with one synced task schedule, ``nightly`` (daily at 02:00 in Berlin)."""
    durable.cron("0 2 * * *", tz="Europe/Berlin", name="nightly", catch_up="none")(tasks["add"])
    durable.sync_schedules()
    return str(durable.store.url)


def test_list_shows_each_schedule_with_its_ticks_and_counts(durable: Durable, scheduled: str) -> None:
    fire_due(durable.runtime)
    listed = invoke(scheduled, "cron", "list")
    assert listed.exit_code == 0, listed.output
    assert "1 schedule(s)" in listed.stdout
    row = next(line for line in listed.stdout.splitlines() if "nightly" in line)
    assert "task u.add" in row and "0 2 * * * (Europe/Berlin)" in row and "active" in row
    assert re.search(r"\d{4}-\d\d-\d\d 02:00:00 CES?T", row), "the next tick, in the schedule's zone"
    durable.schedule_book.declared.clear()
    durable.sync_schedules()
    assert "0 schedule(s)" in invoke(scheduled, "cron", "list").stdout
    with_removed = invoke(scheduled, "cron", "list", "--all")
    assert with_removed.exit_code == 0 and "removed" in with_removed.stdout and "nightly" in with_removed.stdout


def test_pause_says_how_to_resume_and_that_command_resumes(durable: Durable, scheduled: str) -> None:
    paused = invoke(scheduled, "cron", "pause", "nightly")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip() == ("Schedule 'nightly' is paused; its ticks pass without runs until "
                                     "`durable cron resume nightly`.")
    assert durable.schedules()[0].state == "paused"
    resumed = invoke(scheduled, *suggested(paused.stdout))
    assert resumed.exit_code == 0 and resumed.stdout.strip() == "Schedule 'nightly' is active again."
    assert durable.schedules()[0].state == "active"


def test_trigger_starts_a_run_and_says_how_to_follow_it(durable: Durable, scheduled: str) -> None:
    triggered = invoke(scheduled, "cron", "trigger", "nightly")
    assert triggered.exit_code == 0, triggered.output
    (run,) = durable.runs()
    assert triggered.stdout.strip() == f"Started run {run.id} of schedule 'nightly'; `durable runs show {run.id}` " \
                                       "follows it."
    shown = invoke(scheduled, *suggested(triggered.stdout))
    assert shown.exit_code == 0 and "durable_tasks.task" in shown.stdout


def test_backfill_starts_the_missing_ticks_once(durable: Durable, scheduled: str) -> None:
    first = invoke(scheduled, "cron", "backfill", "nightly", "--from", "2025-03-29T00:00", "--to", "2025-03-31T00:00")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[0] == "Started 2 run(s) of schedule 'nightly' for ticks that had none:"
    assert [line.split()[0] for line in first.stdout.splitlines()[1:]] == [
        "2025-03-29T01:00:00+00:00", "2025-03-30T01:00:00+00:00"], "02:00 CET, then 03:00 CEST after the DST gap"
    again = invoke(scheduled, "cron", "backfill", "nightly", "--from", "2025-03-29T00:00", "--to", "2025-03-31T00:00")
    assert again.stdout.startswith("Every tick of schedule 'nightly' from 2025-03-29T00:00:00 to 2025-03-31T00:00:00 "
                                   "already has a run")
    bad = invoke(scheduled, "cron", "backfill", "nightly", "--from", "yesterday", "--to", "2025-03-31")
    assert bad.exit_code == 2 and "'yesterday' is not an ISO 8601 time" in bad.output


def test_an_unknown_name_is_an_error_that_says_how_to_list_them(scheduled: str) -> None:
    failed = invoke(scheduled, "cron", "trigger", "nightlly")
    assert failed.exit_code == 1
    assert failed.stderr.startswith("error: No schedule named 'nightlly' in the durable store at sqlite:///")
    assert "(schedules: nightly). `durable cron list` shows them." in failed.stderr
    listed = invoke(scheduled, *suggested(failed.stderr))
    assert listed.exit_code == 0 and "nightly" in listed.stdout


# -- the commands docs/cron.md prints ------------------------------------------------------------------------

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "cron.md"


def guide_commands(marker: str | None = None) -> list[list[str]]:
    """The ``durable cron ...`` lines of docs/cron.md (of the block after ``<!-- marker -->``), as arguments."""
    text = GUIDE.read_text()
    if marker is not None:
        text = text[text.index(f"<!-- {marker} -->"):]
        text = text[:text.index("```", text.index("```shell") + 3)]
    lines = [line.split("  #")[0].strip() for line in text.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("durable cron ")]


def test_the_guides_operator_commands_run_as_printed(durable: Durable, tasks: dict[str, Any]) -> None:
    durable.cron("0 9 * * MON", tz="Europe/Berlin", name="weekly-report")(tasks["add"])
    durable.sync_schedules()
    commands = guide_commands("cron-commands")
    assert [command[:2] for command in commands] == [["cron", "list"], ["cron", "pause"], ["cron", "resume"],
                                                     ["cron", "trigger"], ["cron", "backfill"]]
    for command in commands:
        result = invoke(str(durable.store.url), *command)
        assert result.exit_code == 0, (command, result.output)
    mondays = [run for run in durable.runs() if run.idempotency_key and ":2025-03" in run.idempotency_key]
    assert len(mondays) == 4, "the Mondays of March 2025 before the 31st, at 09:00 in Berlin"


@pytest.fixture
def guide_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The guide's sample beat app as ``proj/celery.py``, plus a Durable whose report and cleanup are steps."""
    text = GUIDE.read_text()
    after = text[text.index("<!-- beat-sample -->"):]
    start = after.index("```python\n") + len("```python\n")
    code = textwrap.dedent(after[start:after.index("```", start)])
    code = code.replace('broker="redis://127.0.0.1:6379/0")', 'broker="memory://", set_as_current=False)')
    code = code.replace("@app.task(name=", "@app.task(shared=False, name=")
    store = f"sqlite:///{tmp_path / 'guide.sqlite3'}"
    code += (f"\nfrom durable_tasks import Durable\n\ndurable = Durable(app, store={store!r})\n"
             "durable.step(report)\ndurable.step(cleanup)\n")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "celery.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [key for key in sys.modules if key == "proj" or key.startswith("proj.")]:
        monkeypatch.delitem(sys.modules, name)
    yield store
    module = sys.modules.pop("proj.celery", None)
    sys.modules.pop("proj", None)
    if module is not None:
        module.durable.close()


def test_the_guides_import_commands_run_as_printed(guide_project: str) -> None:
    printed, applied = [command for command in guide_commands() if command[1] == "import"]
    assert printed == ["cron", "import", "-A", "proj.celery"] and applied == [*printed, "--apply"]
    text = GUIDE.read_text()
    after = text[text.index("<!-- beat-sample-output -->"):]
    start = after.index("```python\n") + len("```python\n")
    expected = textwrap.dedent(after[start:after.index("```", start)])
    result = invoke(guide_project, *printed)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected, "the guide shows the command's real output"
    result = invoke(guide_project, *applied)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("Applied 2 schedule(s) to sqlite:///")
    assert "- sync-inventory: task 'proj.tasks.sync_inventory' is not a durable step" in result.stdout
