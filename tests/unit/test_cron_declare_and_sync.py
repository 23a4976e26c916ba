"""Declaring schedules (every mistake at declaration time) and syncing them from code to the database.

The sync rules (see ``durable_tasks.schedule_sync``): newer code wins, by the start time of the process that
declared a schedule; a worker removes only schedules of modules it imported (or that no longer exist); only
code schedules of the worker's own Celery app are touched.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from durable_tasks import ConfigurationError, Durable, SerializationError
from durable_tasks.celery_bridge import WorkerServices
from durable_tasks.registry import step_definition
from durable_tasks.schedule_sync import SyncReport, sync_schedules
from durable_tasks.scheduler import fire_due
from durable_tasks.store import queries, schedule_queries

T0 = 28_000_000 * 60.0
HERE = __name__


@pytest.fixture
def wf(durable: Durable) -> Any:
    @durable.workflow(name="unit.report")
    def report(ctx: Any) -> str:
        return "done"

    return report


# -- declaring -----------------------------------------------------------------------------------------------


def test_declaring_on_a_task_makes_it_a_step_and_names_the_schedule_after_it(
        durable: Durable, tasks: dict[str, Any]) -> None:
    plain = tasks["plain"]
    assert step_definition(plain) is None
    assert durable.cron(every="15m", args=[1])(plain) is plain
    assert step_definition(plain) is not None, "the same wrapping as @durable.step, wherever the module is imported"
    (item,) = durable.schedule_book
    assert (item.name, item.target, item.workflow, item.module) == ("u.plain", "task u.plain", "durable_tasks.task",
                                                                    HERE)
    assert json.loads(item.input) == {"args": ["u.plain", [1], {}, {}], "kwargs": {}}


def test_declaring_on_a_workflow_names_the_schedule_after_it(durable: Durable, wf: Any) -> None:
    assert durable.cron("0 9 * * MON", tz="Europe/Berlin")(wf) is wf
    (item,) = durable.schedule_book
    assert (item.name, item.target, item.spec.cron, item.spec.tz) == ("unit.report", "workflow unit.report",
                                                                      "0 9 * * MON", "Europe/Berlin")


@pytest.mark.parametrize(("call", "message"), [
    (lambda d: d.cron("0 25 * * *"), "cron expression '0 25 * * *': bad hour field '25': hours are 0-23"),
    (lambda d: d.cron("@daily", tz="Europe/Berln"), "unknown time zone 'Europe/Berln'. Did you mean 'Europe/Berlin'"),
    (lambda d: d.cron(every="1h", overlap="skipp"), "overlap='skipp' is not a policy; use one of: skip, buffer_one"),
    (lambda d: d.cron(every="1h", catch_up="some"), "catch_up='some' is not a policy; use one of: all, latest, none"),
    (lambda d: d.cron(every="1h", options={"queue": "q"}), "options= apply to a task's message"),
    (lambda d: d.cron(every="1h", name="x" * 201), "the name has 201 characters; use at most 200"),
    (lambda d: d.cron(every="1h", args="eu"), "args='eu' must be a list of arguments"),
    (lambda d: d.cron(), "give exactly one of cron"),
], ids=["cron", "tz", "overlap", "catch_up", "options", "name", "args", "neither"])
def test_mistakes_fail_at_declaration(durable: Durable, wf: Any, call: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        call(durable)(wf)
    assert message in str(error.value)
    assert len(durable.schedule_book) == 0


def test_task_mistakes_fail_before_the_task_is_wrapped(durable: Durable, tasks: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="options 'countdown' cannot be kept by a durable run; use only"):
        durable.cron(every="1h", options={"countdown": 5})(tasks["plain"])
    with pytest.raises(SerializationError, match=r"arguments of schedule 'u\.plain' cannot be encoded as JSON"):
        durable.cron(every="1h", args=[object()])(tasks["plain"])
    assert step_definition(tasks["plain"]) is None
    with pytest.raises(ConfigurationError, match="schedules a workflow or a Celery task, not"):
        durable.cron(every="1h")(lambda ctx: None)


def test_a_name_used_twice_is_an_error_but_a_module_imported_again_is_not(
        durable: Durable, wf: Any, tasks: dict[str, Any]) -> None:
    durable.cron(every="1h", name="nightly")(wf)
    durable.cron(every="2h", name="nightly")(wf)  # the same declaration again (autoreload): the newer wins
    assert durable.schedule_book.declared["nightly"].spec.every == 7200
    with pytest.raises(ConfigurationError, match=(
            r"Schedule 'nightly' is declared twice: for workflow unit\.report in module .* and for task u\.add in "
            r"module .*; pass name='\.\.\.' to one of them\.")):
        durable.cron(every="1h", name="nightly")(tasks["add"])


# -- syncing -------------------------------------------------------------------------------------------------


def sync(durable: Durable, now: float = T0, app: str = "unit") -> SyncReport:
    return sync_schedules(durable.store, durable.schedule_book, app=app, now=now)


def row(durable: Durable, name: str) -> Any:
    with durable.store.read() as conn:
        return schedule_queries.get_schedule(conn, name)


def test_a_new_schedule_is_written_with_its_spec_and_fires_from_its_current_tick(durable: Durable, wf: Any) -> None:
    durable.cron(every="1m", name="minutely", overlap="buffer_one")(wf)
    assert sync(durable).added == ["minutely"]
    new = row(durable, "minutely")
    assert (new.app, new.source, new.module, new.workflow, new.every, new.overlap) == (
        "unit", "code", HERE, "unit.report", 60.0, "buffer_one")
    assert (new.last_fired, new.next_fire_at, new.declared_at) == (None, T0, durable.schedule_book.started_at)
    assert sync(durable) == SyncReport(), "syncing again changes nothing"


def test_a_policy_change_keeps_the_cursor_and_a_calendar_change_starts_over(durable: Durable, wf: Any) -> None:
    durable.cron(every="1m", name="job")(wf)
    sync(durable)
    fire_due(durable.runtime, now=T0 + 61)
    assert row(durable, "job").last_fired == T0 + 60
    durable.cron(every="1m", name="job", overlap="allow_all")(wf)
    assert sync(durable, T0 + 70).changed == ["job"]
    assert (row(durable, "job").last_fired, row(durable, "job").overlap) == (T0 + 60, "allow_all")
    durable.cron(every="2m", name="job", overlap="allow_all", catch_up="all")(wf)
    sync(durable, T0 + 80)
    changed = row(durable, "job")
    assert (changed.last_fired, changed.next_fire_at, changed.every) == (None, T0 + 80, 120.0)
    fire_due(durable.runtime, now=T0 + 130)
    assert row(durable, "job").last_fired == T0 + 120, "no tick due before the change is caught up"


def test_a_schedule_the_code_no_longer_declares_is_stopped_with_its_history_and_can_come_back(
        durable: Durable, wf: Any) -> None:
    durable.cron(every="1m", name="old")(wf)
    sync(durable)
    fire_due(durable.runtime, now=T0 + 1)
    declared = durable.schedule_book.declared.pop("old")
    assert sync(durable, T0 + 10).removed == ["old"]
    gone = row(durable, "old")
    assert gone.removed_at == T0 + 10 and gone.next_fire_at is None and gone.last_fired == T0
    assert fire_due(durable.runtime, now=T0 + 61) == 0
    assert [s.name for s in durable.schedules()] == []
    assert [(s.name, s.state) for s in durable.schedules(include_removed=True)] == [("old", "removed")]
    with durable.store.read() as conn:
        assert [run.schedule for run in queries.list_runs(conn)] == ["old"], "its runs are kept"
    durable.schedule_book.add(declared)
    assert sync(durable, T0 + 100).revived == ["old"]
    assert row(durable, "old").next_fire_at == T0 + 100 and row(durable, "old").removed_at is None


@pytest.fixture
def releases(tmp_path: Path) -> Iterator[tuple[Durable, Durable]]:
    """Two processes of one Celery app ("shop") on one store: an older release and a newer one."""
    store = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    instances = []
    for started_at in (1000.0, 2000.0):
        durable = Durable(Celery("shop", broker="memory://", set_as_current=False), store=store)
        durable.schedule_book.started_at = started_at
        instances.append(durable)
    yield instances[0], instances[1]
    for durable in instances:
        durable.close()


def declare(durable: Durable, name: str, every: str) -> None:
    @durable.cron(every=every, name=name)
    @durable.workflow(name=f"shop.{name}")
    def job(ctx: Any) -> None:
        return None


def test_a_rolling_deploy_an_older_release_never_undoes_what_a_newer_one_declared(
        releases: tuple[Durable, Durable]) -> None:
    old, new = releases
    declare(old, "kept", "1h")
    declare(old, "dropped", "1h")
    sync(old, app="shop")
    declare(new, "kept", "30m")  # changed in the new release
    declare(new, "added", "1h")  # new in the new release ("dropped" is gone from it)
    report = sync(new, app="shop")
    assert (report.added, report.changed, report.removed) == (["added"], ["kept"], ["dropped"])
    late = sync(old, app="shop")  # an old worker whose sync runs late, or runs again
    assert sorted(late.newer) == ["added", "dropped", "kept"]
    assert (late.added, late.changed, late.removed) == ([], [], [])
    assert row(new, "kept").every == 1800 and row(new, "added").removed_at is None
    assert row(new, "dropped").removed_at is not None


def test_a_restarted_worker_of_the_newest_release_declares_again(releases: tuple[Durable, Durable]) -> None:
    _, new = releases
    declare(new, "job", "1h")
    sync(new, app="shop")
    assert row(new, "job").declared_at == 2000.0
    new.schedule_book.started_at = 3000.0  # the new release restarted: it stays the newest
    assert sync(new, app="shop") == SyncReport()
    assert row(new, "job").declared_at == 3000.0


def test_a_worker_removes_only_schedules_of_modules_it_knows(durable: Durable, wf: Any) -> None:
    durable.cron(every="1h", name="mine")(wf)
    for name, module in (("elsewhere", "json.tool"), ("deleted", "no_such_package.jobs")):
        durable.cron(every="1h", name=name)(wf)
        durable.schedule_book.declared[name] = replace(durable.schedule_book.declared[name], module=module)
    sync(durable)
    for name in ("mine", "elsewhere", "deleted"):
        durable.schedule_book.declared.pop(name)
    # json.tool exists but this process never imported it: another kind of worker declares that schedule.
    assert "json.tool" not in sys.modules
    assert sorted(sync(durable, T0 + 1).removed) == ["deleted", "mine"]
    assert row(durable, "elsewhere").removed_at is None


def test_a_name_of_another_app_is_a_conflict_left_alone(durable: Durable, wf: Any) -> None:
    durable.cron(every="1h", name="shared-name")(wf)
    sync(durable, app="other-app")
    assert sync(durable, app="unit").conflicts == ["shared-name"]
    assert row(durable, "shared-name").app == "other-app"


def test_an_operators_pause_stays_until_the_code_changes_paused(durable: Durable, wf: Any) -> None:
    durable.cron(every="1h", name="job")(wf)
    sync(durable)
    durable.pause_schedule("job")
    durable.cron(every="1h", name="job", overlap="allow_all")(wf)
    sync(durable, T0 + 1)
    assert row(durable, "job").paused, "a deploy does not resume what an operator paused"
    durable.cron(every="1h", name="job", overlap="allow_all", paused=True)(wf)
    sync(durable, T0 + 2)
    durable.cron(every="1h", name="job", overlap="allow_all", paused=False)(wf)
    sync(durable, T0 + 3)
    assert not row(durable, "job").paused, "the code's paused= changed: it decides again"


def test_the_worker_syncs_its_schedules_when_it_starts(durable: Durable, wf: Any) -> None:
    durable.cron(every="1h", name="at-start")(wf)
    services = WorkerServices(durable.runtime, durable.timers, durable.schedule_book)
    services.start()
    services.stop()
    assert row(durable, "at-start").app == "unit"
