"""The celery beat importer on a sample app: converted specs, the exact rendered source, and the reasons."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab, schedule, solar

from durable_tasks.integrations.beat import BeatImport, Unconverted, read_beat_schedule, render_declarations
from durable_tasks.schedules import parse_schedule


class BusinessHours(schedule):
    """A custom schedule class, as some projects write."""


def _register(app: Celery, name: str) -> None:
    def run(*args: Any, **kwargs: Any) -> None:
        return None

    app.task(name=name, shared=False)(run)


def sample_app() -> Celery:
    app = Celery("proj", broker="memory://", set_as_current=False)
    app.conf.timezone = "Europe/Berlin"
    for name in ("report", "cleanup", "audit", "ping", "sync_inventory", "digest", "lights", "payroll", "remind"):
        _register(app, f"proj.tasks.{name}")
    app.conf.beat_schedule = {
        "weekly-report": {
            "task": "proj.tasks.report",
            "schedule": crontab(minute=0, hour=9, day_of_week="mon"),
            "args": ("sales",),
            "kwargs": {"fmt": "pdf"},
            "options": {"queue": "reports", "expires": 3600},
        },
        "cleanup": {"task": "proj.tasks.cleanup", "schedule": crontab(minute="*/15")},
        "first-monday-audit": {
            "task": "proj.tasks.audit",
            "schedule": crontab(minute=30, hour=7, day_of_week=1, day_of_month="1-7"),
        },
        "office-hours": {
            "task": "proj.tasks.ping",
            "schedule": crontab(minute="0,30", hour="8-18", day_of_week="mon-fri"),
        },
        "sync-inventory": {
            "task": "proj.tasks.sync_inventory",
            "schedule": timedelta(minutes=15),
            "options": {"priority": 5},
        },
        "ping": {"task": "proj.tasks.ping", "schedule": 30.0},
        "hourly-digest": {"task": "proj.tasks.digest", "schedule": schedule(run_every=timedelta(hours=1))},
        "rounded-digest": {"task": "proj.tasks.digest", "schedule": schedule(timedelta(hours=1), relative=True)},
        "evening-lights": {"task": "proj.tasks.lights", "schedule": solar("sunset", 52.52, 13.405)},
        "mid-month-mondays": {
            "task": "proj.tasks.payroll",
            "schedule": crontab(minute=0, hour=8, day_of_week="mon", day_of_month="10-20"),
        },
        "business-hours": {"task": "proj.tasks.ping", "schedule": BusinessHours(timedelta(hours=1))},
        "legacy": {"task": "proj.tasks.removed", "schedule": 60},
        "dated-reminder": {"task": "proj.tasks.remind", "schedule": 3600, "args": (datetime(2025, 1, 1),)},
    }
    app.add_periodic_task(300.0, app.tasks["proj.tasks.ping"].s(), name="ping-5m")
    return app


@pytest.fixture(scope="module")
def imported() -> BeatImport:
    return read_beat_schedule(sample_app())


EXPECTED = '''\
# Durable schedules imported from app.conf.beat_schedule: 8 converted, 6 left in beat.
# Paste them after `durable = Durable(app, ...)`, then delete the converted entries from beat_schedule.

# weekly-report (beat: <crontab: 0 9 * * mon (m/h/dM/MY/d)>)
# note: option expires=3600 dropped: a durable run is never dropped once started; catch_up_window
#   skips ticks the scheduler reaches late, and overlap='skip' (the default) keeps runs from piling
#   up.
durable.cron(
    "0 9 * * 1",
    tz="Europe/Berlin",
    name="weekly-report",
    args=["sales"],
    kwargs={"fmt": "pdf"},
    options={"queue": "reports"},
)(app.tasks["proj.tasks.report"])

# cleanup (beat: <crontab: */15 * * * * (m/h/dM/MY/d)>)
durable.cron("*/15 * * * *", tz="Europe/Berlin", name="cleanup")(app.tasks["proj.tasks.cleanup"])

# first-monday-audit (beat: <crontab: 30 7 1-7 * 1 (m/h/dM/MY/d)>)
durable.cron(
    "30 7 * * 1#1",
    tz="Europe/Berlin",
    name="first-monday-audit",
)(app.tasks["proj.tasks.audit"])

# office-hours (beat: <crontab: 0,30 8-18 * * mon-fri (m/h/dM/MY/d)>)
durable.cron(
    "0,30 8-18 * * 1-5",
    tz="Europe/Berlin",
    name="office-hours",
)(app.tasks["proj.tasks.ping"])

# sync-inventory (beat: datetime.timedelta(seconds=900))
durable.cron(
    every="15m",
    name="sync-inventory",
    options={"priority": 5},
)(app.tasks["proj.tasks.sync_inventory"])

# ping (beat: 30.0)
durable.cron(every="30s", name="ping")(app.tasks["proj.tasks.ping"])

# hourly-digest (beat: <freq: 1.00 hour>)
durable.cron(every="1h", name="hourly-digest")(app.tasks["proj.tasks.digest"])

# ping-5m (beat: 300.0)
durable.cron(every="5m", name="ping-5m")(app.tasks["proj.tasks.ping"])

# Not converted (keep them in beat, or declare them by hand):
# - rounded-digest: relative=True rounds each run to the interval's resolution in beat's clock;
#   durable intervals are anchored to the UNIX epoch instead. Write the equivalent cron expression
#   by hand (relative hourly is '0 * * * *').
# - evening-lights: solar('sunset', 52.52, 13.405) follows the sun, which moves every day; it is not
#   a cron expression or an interval. Keep it in beat.
# - mid-month-mondays: celery fires when day_of_month ('10-20') and day_of_week ('mon') both match,
#   cron when either does; only whole weeks of the month (such as '1-7' for the first weekday of the
#   month) have a cron equivalent. Rewrite it by hand.
# - business-hours: custom schedule class tests.unit.test_beat_import.BusinessHours: only crontab,
#   schedule, timedelta and numbers convert; declare the nearest cron or interval by hand.
# - legacy: unknown task 'proj.tasks.removed': no such task is registered in the app, even after
#   importing its modules; fix the name, or add its module to `imports`/`include` and import again.
# - dated-reminder: its args cannot be journaled as JSON (Object of type datetime is not JSON
#   serializable); pass plain values such as ISO strings.
'''


def test_rendered_declarations_are_exactly_the_expected_source(imported: BeatImport) -> None:
    assert render_declarations(imported) == EXPECTED
    compile(EXPECTED, "<beat import>", "exec")


def test_rendered_source_declares_the_imported_specs(imported: BeatImport) -> None:
    # Runs the pasted code against a recorder of the planned `durable.cron(...)(task)` call, then parses the
    # recorded arguments as the decorator will: they must give back the imported specs.
    declared: list[tuple[dict[str, Any], str]] = []

    class Recorder:
        def cron(self, cron: str | None = None, **options: Any) -> Any:
            return lambda task: declared.append(({"cron": cron, **options}, task))

    exec(render_declarations(imported, durable_name="d", app_name="proj"),
         {"d": Recorder(), "proj": type("App", (), {"tasks": {s.task: s.task for s in imported.schedules}})})
    assert len(declared) == len(imported.schedules)
    for (options, task), expected in zip(declared, imported.schedules, strict=True):
        calendar = {key: options.pop(key) for key in ("cron", "every", "tz") if key in options}
        assert parse_schedule(options.pop("name"), **calendar) == expected.spec
        assert task == expected.task
        assert options == {key: value for key in ("args", "kwargs", "options") if (value := getattr(expected, key))}


def test_converted_entries(imported: BeatImport) -> None:
    by_name = {entry.name: entry for entry in imported.schedules}
    report = by_name["weekly-report"]
    assert (report.spec.cron, report.spec.tz, report.task) == ("0 9 * * 1", "Europe/Berlin", "proj.tasks.report")
    assert (report.args, report.kwargs, report.options) == (["sales"], {"fmt": "pdf"}, {"queue": "reports"})
    assert len(report.notes) == 1 and report.notes[0].startswith("option expires=3600 dropped")
    assert by_name["sync-inventory"].spec.every == 900.0 and by_name["ping"].spec.every == 30.0
    assert by_name["hourly-digest"].spec.every == 3600.0 and by_name["ping-5m"].spec.every == 300.0
    assert by_name["first-monday-audit"].spec.cron == "30 7 * * 1#1"


@pytest.mark.parametrize("when", [
    crontab(minute=0, hour=9, day_of_week="mon"),
    crontab(minute=30, hour=7, day_of_week=1, day_of_month="1-7"),
    crontab(minute="0,30", hour="8-18", day_of_week="mon-fri"),
    crontab(minute=0, hour=0, day_of_month="29-31", day_of_week="fri,sat"),
    crontab(minute="5-59/15", hour="*/6", day_of_month="1,15", month_of_year="1-12/3"),
], ids=repr)
def test_converted_crontab_fires_when_celerys_own_crontab_does(when: crontab) -> None:
    app = sample_app()
    app.conf.beat_schedule = {"entry": {"task": "proj.tasks.ping", "schedule": when}}
    (entry,) = read_beat_schedule(app).schedules
    when.app = app
    moment, theirs = datetime(2025, 1, 1, 0, 0, 30, tzinfo=ZoneInfo("Europe/Berlin")), []
    for _ in range(40):
        last, delta, _now = when.remaining_delta(moment)
        moment = last + delta
        theirs.append(moment.timestamp())
    start = datetime(2025, 1, 1, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert entry.spec.ticks_between(start, 1e12, 40) == theirs


def test_unconverted_entries_say_why(imported: BeatImport) -> None:
    reasons = {entry.name: entry.reason for entry in imported.unconverted}
    assert list(reasons) == [
        "rounded-digest", "evening-lights", "mid-month-mondays", "business-hours", "legacy", "dated-reminder",
    ]
    assert reasons["rounded-digest"].startswith("relative=True rounds each run")
    assert reasons["evening-lights"].startswith("solar('sunset', 52.52, 13.405) follows the sun")
    assert "both match, cron when either does" in reasons["mid-month-mondays"]
    assert reasons["business-hours"].startswith("custom schedule class tests.unit.test_beat_import.BusinessHours")
    assert reasons["legacy"].startswith("unknown task 'proj.tasks.removed'")
    assert reasons["dated-reminder"].startswith("its args cannot be journaled as JSON")


@pytest.mark.parametrize(("entry", "reason"), [
    ({"schedule": 60}, "the entry names no task ('task' is missing)."),
    ({"task": "proj.tasks.ping", "schedule": 0.5},
     "Schedule 'entry': every=0.5 seconds is too short; intervals must be at least 1 second."),
    ({"task": "proj.tasks.ping", "schedule": 60, "relative": True}, "relative=True rounds each run"),
    ({"task": "proj.tasks.ping", "schedule": 60, "kwargs": {1: "a"}},
     "its kwargs change when journaled as JSON ({1: 'a'} becomes {'1': 'a'}); use string keys."),
    ({"task": "proj.tasks.ping", "schedule": None}, "schedule=None is not a schedule."),
])
def test_more_unconvertible_entries(entry: dict[str, Any], reason: str) -> None:
    app = Celery("proj", broker="memory://", set_as_current=False)
    _register(app, "proj.tasks.ping")
    app.conf.beat_schedule = {"entry": entry}
    result = read_beat_schedule(app)
    assert result.schedules == [] and len(result.unconverted) == 1
    assert result.unconverted[0] == Unconverted("entry", result.unconverted[0].reason)
    assert result.unconverted[0].reason.startswith(reason)


def test_crontab_fields_become_compact_cron_fields() -> None:
    app = Celery("proj", broker="memory://", set_as_current=False)  # UTC by default
    _register(app, "proj.tasks.ping")
    entries = {
        "a": crontab(minute="5-59/15", hour="*/6", day_of_month="1,15", month_of_year="1-12/3"),
        "b": crontab(minute=[0, 1, 2, 3, 10], hour="22-2"),  # celery wraps 22-2 around midnight
        "c": crontab(minute=0, hour=0, day_of_month="29-31", day_of_week="fri,sat"),
    }
    app.conf.beat_schedule = {name: {"task": "proj.tasks.ping", "schedule": when} for name, when in entries.items()}
    specs = {entry.name: entry.spec for entry in read_beat_schedule(app).schedules}
    assert {name: spec.cron for name, spec in specs.items()} == {
        "a": "5-50/15 */6 1,15 */3 *",
        "b": "0-3,10 0-2,22,23 * * *",
        "c": "0 0 * * 5#5,6#5",
    }
    assert {spec.tz for spec in specs.values()} == {"UTC"}


def test_nowfun_in_another_zone_is_noted() -> None:
    app = sample_app()
    berlin_now = app.now

    def tokyo_now() -> datetime:
        return datetime.now(ZoneInfo("Asia/Tokyo"))

    app.conf.beat_schedule = {"tokyo": {"task": "proj.tasks.ping", "schedule": crontab(minute=0, nowfun=tokyo_now)}}
    (only,) = read_beat_schedule(app).schedules
    assert only.spec.tz == "Europe/Berlin" and berlin_now is not None
    assert only.notes == (
        "nowfun returns times in Asia/Tokyo, but celery matches crontab fields in the app's time zone "
        "Europe/Berlin; converted with tz='Europe/Berlin', change it if you meant the other.",
    )


def _doc_block(text: str, marker: str) -> str:
    """The fenced block right after ``<!-- marker -->`` in the docs, un-indented."""
    after = text[text.index(f"<!-- {marker} -->"):]
    start = after.index("```python\n") + len("```python\n")
    return textwrap.dedent(after[start:after.index("```", start)])


def test_the_migration_guide_shows_the_importers_real_output() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "cron.md").read_text()
    code = _doc_block(guide, "beat-sample")
    # Keep the sample app out of celery's global state (current app, shared tasks) for the other tests.
    isolated = code.replace('broker="redis://127.0.0.1:6379/0")', 'broker="memory://", set_as_current=False)')
    isolated = isolated.replace("@app.task(name=", "@app.task(shared=False, name=")
    assert isolated.count("set_as_current=False") == 1 and isolated.count("shared=False") == 7
    namespace: dict[str, Any] = {}
    exec(compile(isolated, "docs/cron.md", "exec"), namespace)
    assert render_declarations(read_beat_schedule(namespace["app"])) == _doc_block(guide, "beat-sample-output")
