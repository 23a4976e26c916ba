"""Reading ``app.conf.beat_schedule`` into durable schedule specs, with a reason for every entry left behind."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import crontab, schedule, solar

from durable_tasks.errors import ConfigurationError
from durable_tasks.schedules import ScheduleSpec, parse_schedule

#: ``apply_async`` options a durable run keeps for the task it dispatches.
KEPT_OPTIONS = frozenset({"queue", "routing_key", "exchange", "priority", "time_limit", "soft_time_limit"})

_DROPPED_OPTIONS = {
    "expires": "a durable run is never dropped once started; catch_up_window skips ticks the scheduler reaches "
    "late, and overlap='skip' (the default) keeps runs from piling up",
    "countdown": "a tick is its own start time; use start_at or jitter",
    "eta": "a tick is its own start time; use start_at or jitter",
    "link": "callbacks are not journaled; schedule a workflow that runs both steps",
    "link_error": "error callbacks are not journaled; a failed run is parked and shown by `durable runs`",
    "task_id": "a scheduled run is keyed by (schedule name, tick)",
    "serializer": "durable payloads are always JSON",
    "retry": "publishing goes through the outbox, which retries until the broker has the message",
    "retry_policy": "publishing goes through the outbox; retry the task itself with @durable.step(retry=...)",
    "headers": "durable-tasks sets its own headers (run, step, attempt) on the dispatched task",
}

_WEEKS = {1: frozenset(range(1, 8)), 2: frozenset(range(8, 15)), 3: frozenset(range(15, 22)),
          4: frozenset(range(22, 29)), 5: frozenset(range(29, 32))}


@dataclass(frozen=True)
class ImportedSchedule:
    """A beat entry converted to a durable schedule that starts ``task`` with ``args``/``kwargs``/``options``.

    ``source`` is the entry's beat schedule as beat prints it (``<crontab: 0 9 * * mon (m/h/dM/MY/d)>``);
    ``notes`` say what was dropped or assumed on the way (options without a durable meaning, time zones).
    """

    name: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    spec: ScheduleSpec
    source: str
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Unconverted:
    """A beat entry that has no honest durable equivalent, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class BeatImport:
    """What :func:`read_beat_schedule` found: the converted entries and the ones left in beat."""

    schedules: list[ImportedSchedule]
    unconverted: list[Unconverted]


class _Skip(Exception):
    """An entry cannot be converted; the message is the reason shown to the user."""


def read_beat_schedule(app: Celery) -> BeatImport:
    """Convert every entry of ``app.conf.beat_schedule`` (including ``add_periodic_task`` ones).

    Imports the app's task modules first (``imports``, ``include``, autodiscovery), as a worker would, so that
    unknown task names are reported. ``crontab`` becomes a cron schedule in the app's time zone; numbers,
    ``timedelta`` and ``schedule(run_every=...)`` become intervals; everything else is listed as unconverted.

    >>> result = read_beat_schedule(app)                          # doctest: +SKIP
    >>> print(render_declarations(result))                       # doctest: +SKIP
    """
    app.loader.import_default_modules()
    schedules: list[ImportedSchedule] = []
    unconverted: list[Unconverted] = []
    for name, entry in (app.conf.beat_schedule or {}).items():
        try:
            schedules.append(_convert(app, str(name), entry))
        except _Skip as reason:
            unconverted.append(Unconverted(str(name), str(reason)))
    return BeatImport(schedules, unconverted)


def _convert(app: Celery, name: str, entry: Mapping[str, Any]) -> ImportedSchedule:
    task = entry.get("task")
    if not isinstance(task, str) or not task:
        raise _Skip("the entry names no task ('task' is missing).")
    if task not in app.tasks:
        raise _Skip(
            f"unknown task {task!r}: no such task is registered in the app, even after importing its modules; "
            "fix the name, or add its module to `imports`/`include` and import again."
        )
    notes: list[str] = []
    calendar = _calendar(app, entry, notes)
    try:
        spec = parse_schedule(name, **calendar)
    except ConfigurationError as error:
        raise _Skip(str(error)) from None
    options = dict(entry.get("options") or {})
    for option in sorted(set(options) - KEPT_OPTIONS):
        reason = _DROPPED_OPTIONS.get(option, "durable runs do not use it")
        notes.append(f"option {option}={options.pop(option)!r} dropped: {reason}.")
    return ImportedSchedule(
        name=name,
        task=task,
        args=_json("args", list(entry.get("args") or ())),
        kwargs=_json("kwargs", dict(entry.get("kwargs") or {})),
        options=_json("options", options),
        spec=spec,
        source=repr(entry.get("schedule")),
        notes=tuple(notes),
    )


def _calendar(app: Celery, entry: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    """The ``parse_schedule`` arguments for the entry's ``schedule``."""
    when = entry.get("schedule")
    relative = bool(entry.get("relative")) or (isinstance(when, schedule) and when.relative)
    if isinstance(when, bool) or when is None:
        raise _Skip(f"schedule={when!r} is not a schedule.")
    if isinstance(when, int | float | timedelta) or type(when) is schedule:
        seconds = when.run_every if type(when) is schedule else when
        if relative:
            raise _Skip(
                "relative=True rounds each run to the interval's resolution in beat's clock; durable intervals "
                "are anchored to the UNIX epoch instead. Write the equivalent cron expression by hand "
                "(relative hourly is '0 * * * *')."
            )
        return {"every": seconds}
    if type(when) is crontab:
        zone = _zone_name(vars(when).get("tz") or app.timezone)
        if zone is None:
            raise _Skip(
                "the app's time zone has no IANA name, so the crontab's local times are ambiguous; set "
                "app.conf.timezone (e.g. 'Europe/Berlin') and import again."
            )
        if when.nowfun is not None:
            now_zone = _zone_name(when.nowfun().tzinfo)
            if now_zone != zone:
                notes.append(
                    f"nowfun returns times in {now_zone}, but celery matches crontab fields in the app's "
                    f"time zone {zone}; converted with tz={zone!r}, change it if you meant the other."
                )
        return {"cron": _cron(when), "tz": zone}
    if isinstance(when, solar):
        raise _Skip(
            f"solar({when.event!r}, {when.lat}, {when.lon}) follows the sun, which moves every day; it is not a "
            "cron expression or an interval. Keep it in beat."
        )
    kind = f"{type(when).__module__}.{type(when).__qualname__}"
    raise _Skip(
        f"custom schedule class {kind}: only crontab, schedule, timedelta and numbers convert; "
        "declare the nearest cron or interval by hand."
    )


def _cron(when: crontab) -> str:
    """The 5-field cron expression that fires exactly when the crontab does."""
    minute = _field(when.minute, 0, 59)
    hour = _field(when.hour, 0, 23)
    month = _field(when.month_of_year, 1, 12)
    days, weekdays = set(when.day_of_month), set(when.day_of_week)
    if days == set(range(1, 32)) or weekdays == set(range(7)):
        return f"{minute} {hour} {_field(days, 1, 31)} {month} {_field(weekdays, 0, 6)}"
    # Celery fires when day_of_month AND day_of_week match; cron fires when either does. Only whole weeks of
    # the month have an exact equivalent: days 1-7 on Monday is the first Monday, MON#1.
    nths = [nth for nth, week in _WEEKS.items() if week <= days]
    if set().union(*(_WEEKS[nth] for nth in nths)) != days:
        raise _Skip(
            f"celery fires when day_of_month ({when._orig_day_of_month!r}) and day_of_week "
            f"({when._orig_day_of_week!r}) both match, cron when either does; only whole weeks of the month "
            "(such as '1-7' for the first weekday of the month) have a cron equivalent. Rewrite it by hand."
        )
    nth_weekdays = ",".join(f"{day}#{nth}" for day in sorted(weekdays) for nth in nths)
    return f"{minute} {hour} * {month} {nth_weekdays}"


def _field(values: set[int], low: int, high: int) -> str:
    """A cron field for ``values``: ``*``, ``*/15``, ``8-18/2``, ``1-5`` or a list."""
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    steps = {b - a for a, b in itertools.pairwise(ordered)}
    if len(ordered) >= 3 and len(steps) == 1 and (step := steps.pop()) > 1:
        if ordered[0] == low and ordered[-1] + step > high:
            return f"*/{step}"
        return f"{ordered[0]}-{ordered[-1]}/{step}"
    parts: list[str] = []
    run: list[int] = []
    for value in [*ordered, None]:
        if run and (value is None or value != run[-1] + 1):
            parts.append(f"{run[0]}-{run[-1]}" if len(run) >= 3 else ",".join(map(str, run)))
            run = []
        if value is not None:
            run.append(value)
    return ",".join(parts)


def _zone_name(zone: tzinfo | None) -> str | None:
    if isinstance(zone, ZoneInfo):
        return zone.key
    if zone is UTC:
        return "UTC"
    return None


def _json(what: str, value: Any) -> Any:
    """``value`` as it will be journaled (JSON), or a reason to leave the entry in beat."""
    try:
        encoded = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise _Skip(
            f"its {what} cannot be journaled as JSON ({error}); pass plain values such as ISO strings."
        ) from None
    if encoded != _plain(value):
        raise _Skip(f"its {what} change when journaled as JSON ({value!r} becomes {encoded!r}); use string keys.")
    return encoded


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, the way JSON returns them."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
