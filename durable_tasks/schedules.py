"""The calendar of durable schedules: when a cron or interval schedule ticks, and which ticks to start.

Pure logic, no database: the store keeps each schedule's last fired tick and asks this module what comes next.
A *tick* is a nominal instant (UTC epoch seconds); the run it starts is keyed by ``(schedule name, tick)``.

::

    spec = parse_schedule("weekly-report", "0 9 * * MON", tz="Europe/Berlin")
    tick = spec.next_tick(time.time())          # Monday 09:00 Berlin time, as an epoch
    spec.fire_at(tick)                          # the tick plus its deterministic jitter
    ticks_to_start(spec, last_fired=previous, now=time.time())   # due ticks, per the catch-up policy

Calendar rules (see ``docs/cron.md``):

- Cron expressions follow Debian cron (through ``cronsim``): a job at a fixed local time that falls in a
  spring-forward gap runs once, right after the gap; a fixed local time repeated at fall-back runs once, at its
  first occurrence. Jobs with ``*`` in the minute or hour field run on real elapsed time (every real hour).
- Interval schedules (``every``) tick at ``start_at + k * every`` (the UNIX epoch when there is no ``start_at``),
  counted in UTC seconds: they never drift and ignore DST and ``tz``.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import NamedTuple, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from .durations import parse_duration
from .errors import ConfigurationError

__all__ = [
    "CURRENT_TICK_GRACE",
    "MAX_BUFFERED_TICKS",
    "MAX_CATCH_UP_TICKS",
    "MIN_INTERVAL",
    "CatchUp",
    "Overlap",
    "ScheduleCursor",
    "ScheduleSpec",
    "advance",
    "parse_schedule",
    "ticks_to_start",
]

#: A due tick counts as *current* (``catch_up="none"``) when it became due at most this many seconds ago.
CURRENT_TICK_GRACE = 60.0
#: At most this many ticks are returned by one ``ticks_to_start`` call with ``catch_up="all"``.
MAX_CATCH_UP_TICKS = 1000
#: The most ticks ``overlap="buffer_all"`` may keep waiting (``buffer_limit``): a schedule's row stays small.
MAX_BUFFERED_TICKS = 1000
#: The shortest interval a schedule may have: ticks are fired from the database, not a tight loop.
MIN_INTERVAL = 1.0

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_RULES = {
    "minute": "minutes are 0-59",
    "hour": "hours are 0-23",
    "day-of-month": "days are 1-31, or L (last day), LW (last weekday)",
    "month": "months are 1-12 or JAN-DEC",
    "day-of-week": "days are 0-7 (0 and 7 are Sunday) or SUN-SAT, with MON#2 (second Monday) and 5L (last Friday)",
}
_FIELD_SYNTAX = "lists '1,15', low-to-high ranges '1-5' and steps '*/10' or '8-18/2' are allowed"
# Jitter is checked against the shortest gap among this many ticks from a fixed reference instant.
_GAP_SAMPLE = 32
_GAP_REFERENCE = datetime(2001, 1, 1, tzinfo=UTC)
# Scans start this far before the first tick they must see, well clear of float rounding.
_SCAN_MARGIN = 0.5
_Policy = TypeVar("_Policy", bound=StrEnum)


class Overlap(StrEnum):
    """What to do when a tick comes while the previous run of the schedule is still going (Temporal's names)."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"
    ALLOW_ALL = "allow_all"


class CatchUp(StrEnum):
    """Which missed ticks to start after downtime, within ``catch_up_window``."""

    ALL = "all"
    LATEST = "latest"
    NONE = "none"


@dataclass(frozen=True)
class ScheduleSpec:
    """One durable schedule's definition: its calendar and policies. Build it with :func:`parse_schedule`.

    Times are UTC epoch seconds. Exactly one of ``cron`` (5 fields or an alias such as ``@daily``, read in
    ``tz``) and ``every`` (seconds, anchored to ``start_at`` or the UNIX epoch) is set. Construction validates
    every field and raises :class:`~durable_tasks.errors.ConfigurationError`.
    """

    name: str
    cron: str | None
    every: float | None
    tz: str = "UTC"
    overlap: Overlap = Overlap.SKIP
    buffer_limit: int = 100
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_window: float = 86400.0
    jitter: float = 0.0
    start_at: float | None = None
    end_at: float | None = None
    paused: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError(f"A schedule needs a non-empty name; got {self.name!r}.")
        if (self.cron is None) == (self.every is None):
            raise self._error(
                "give exactly one of cron (e.g. cron='0 9 * * MON') and every (e.g. every='15m'); "
                + ("both were given." if self.cron is not None else "neither was given.")
            )
        if not isinstance(self.tz, str):
            raise self._error(f"tz={self.tz!r} must be an IANA zone name such as 'Europe/Berlin'.")
        _zone(self.name, self.tz)
        if self.every is not None and self.every < MIN_INTERVAL:
            raise self._error(
                f"every={self.every!r} seconds is too short; intervals must be at least {MIN_INTERVAL:g} second."
            )
        if self.cron is not None:
            _check_cron(self.name, self.cron)
        # Rows read back from a database hold plain text: accept it, with the same messages as parse_schedule.
        object.__setattr__(self, "overlap", _choice(f"Schedule {self.name!r}", "overlap", self.overlap, Overlap))
        object.__setattr__(self, "catch_up", _choice(f"Schedule {self.name!r}", "catch_up", self.catch_up, CatchUp))
        if not 1 <= self.buffer_limit <= MAX_BUFFERED_TICKS:
            raise self._error(f"buffer_limit={self.buffer_limit!r} must be between 1 and {MAX_BUFFERED_TICKS}.")
        if self.catch_up_window <= 0:
            raise self._error(f"catch_up_window={self.catch_up_window!r} must be positive, e.g. '1h' or '1d'.")
        if self.start_at is not None and self.end_at is not None and self.end_at < self.start_at:
            raise self._error(
                f"end_at ({_iso(self.end_at)}) is before start_at ({_iso(self.start_at)}); swap them or drop one."
            )
        if self.jitter < 0:
            raise self._error(f"jitter={self.jitter!r} is negative; give a delay such as '30s'.")
        if self.jitter and self.jitter > self.max_jitter:
            raise self._error(
                f"jitter of {self.jitter:g} s is more than half the shortest gap between two ticks "
                f"({self.max_jitter:g} s allowed), so jittered runs could swap order; lower it."
            )

    # -- the calendar ----------------------------------------------------------------------------------------

    def next_tick(self, after: float) -> float | None:
        """The first nominal tick strictly after ``after``, or ``None`` when the schedule has ended.

        >>> parse_schedule("quarterly", every="15m").next_tick(0.0)
        900.0
        """
        return next(self._ticks(after), None)

    def ticks_between(self, start: float, end: float, limit: int) -> list[float]:
        """The nominal ticks in ``(start, end]``, oldest first, at most ``limit`` of them."""
        found: list[float] = []
        for tick in self._ticks(start):
            if tick > end or len(found) >= limit:
                break
            found.append(tick)
        return found

    def jitter_for(self, tick: float) -> float:
        """The delay added to ``tick``: in ``[0, jitter]``, the same for the same (name, tick) in every process."""
        if not self.jitter:
            return 0.0
        digest = hashlib.blake2b(f"{self.name}\x00{tick!r}".encode(), digest_size=8).digest()
        return self.jitter * int.from_bytes(digest, "big") / 2**64

    def fire_at(self, tick: float) -> float:
        """When ``tick`` is due: the nominal tick plus its jitter."""
        return tick + self.jitter_for(tick)

    def definition_hash(self) -> str:
        """A digest of everything that moves ticks or their fire times (calendar, zone, bounds, jitter).

        Policies (overlap, catch-up, pause) do not change it: a store recomputes its next fire time only when
        this changes.
        """
        def number(value: float | None) -> float | None:
            return None if value is None else float(value)  # 900 and 900.0 from a database are one schedule

        calendar = {
            "cron": self._expression if self.cron is not None else None,
            "every": number(self.every),
            "tz": self.tz if self.cron is not None else None,
            "start_at": number(self.start_at),
            "end_at": number(self.end_at),
            "jitter": number(self.jitter),
        }
        text = json.dumps(calendar, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"schedule-v1:{text}".encode()).hexdigest()[:32]

    @property
    def current_grace(self) -> float:
        """How long after its fire time a tick still counts as *current* (``catch_up="none"``, new schedules).

        ``CURRENT_TICK_GRACE`` (60 s), or for an interval a quarter of it when that is shorter (at least one
        second): a tick of an every-4-seconds schedule due 3 s ago was missed, not fired a little late.
        """
        if self.every is None:
            return CURRENT_TICK_GRACE
        return min(CURRENT_TICK_GRACE, max(self.every / 4, MIN_INTERVAL))

    @cached_property
    def max_jitter(self) -> float:
        """The largest allowed ``jitter``: half the shortest gap between two consecutive ticks."""
        if self.every is not None:
            return self.every / 2
        sample = CronSim(self._expression, _GAP_REFERENCE)
        ticks = [moment.timestamp() for moment, _ in zip(sample, range(_GAP_SAMPLE), strict=False)]
        return min(b - a for a, b in itertools.pairwise(ticks)) / 2

    # -- internals -------------------------------------------------------------------------------------------

    @cached_property
    def _expression(self) -> str:
        assert self.cron is not None
        return _expression(self.cron)

    @cached_property
    def _zone(self) -> tzinfo:
        return _zone(self.name, self.tz)

    def _ticks(self, after: float) -> Iterator[float]:
        """Nominal ticks strictly after ``after``, within ``start_at``/``end_at``, oldest first."""
        source = self._interval_ticks(after) if self.every is not None else self._cron_ticks(after)
        for tick in source:
            if self.end_at is not None and tick > self.end_at:
                return
            yield tick

    def _interval_ticks(self, after: float) -> Iterator[float]:
        assert self.every is not None
        anchor = self.start_at if self.start_at is not None else 0.0
        k = math.floor((after - anchor) / self.every)  # may be one step short after rounding: skipped below
        if self.start_at is not None:
            k = max(k, 0)
        while True:
            tick = anchor + k * self.every
            if tick > after:
                yield tick
            k += 1

    def _cron_ticks(self, after: float) -> Iterator[float]:
        if self.start_at is not None:
            # Cron ticks are whole seconds: those >= start_at are the ones > ceil(start_at) - 1.
            after = max(after, math.ceil(self.start_at) - 1.0)
        # Whole seconds: a fraction just below a tick would round up to it in datetime and skip it.
        for moment in CronSim(self._expression, datetime.fromtimestamp(math.floor(after), self._zone)):
            tick = moment.timestamp()
            # A repeated local time maps to its first occurrence, which can precede `after`: it already ran.
            if tick > after:
                yield tick

    def _newest_tick_at_or_before(self, moment: float) -> float | None:
        """A tick <= ``moment`` from which a forward scan finds every later tick (a seek, not a filter)."""
        if self.end_at is not None:
            moment = min(moment, self.end_at)
        if self.every is not None:
            anchor = self.start_at if self.start_at is not None else 0.0
            k = math.floor((moment - anchor) / self.every)
            if anchor + k * self.every > moment:  # rounding
                k -= 1
            return anchor + k * self.every if k >= 0 or self.start_at is None else None
        # Reverse iteration of whole seconds: start one second past floor(moment) so the first result <= moment.
        start = datetime.fromtimestamp(math.floor(moment) + 1, self._zone)
        found = next(CronSim(self._expression, start, reverse=True), None)
        return found.timestamp() if found is not None and found.timestamp() <= moment else None

    def _error(self, problem: str) -> ConfigurationError:
        return ConfigurationError(f"Schedule {self.name!r}: {problem}")


def parse_schedule(
    name: str,
    cron: str | None = None,
    *,
    every: float | str | timedelta | None = None,
    tz: str | tzinfo = "UTC",
    overlap: Overlap | str = Overlap.SKIP,
    catch_up: CatchUp | str = CatchUp.LATEST,
    catch_up_window: float | str | timedelta = "1d",
    jitter: float | str | timedelta | None = None,
    start_at: datetime | float | None = None,
    end_at: datetime | float | None = None,
    paused: bool = False,
    buffer_limit: int = 100,
) -> ScheduleSpec:
    """Validate a schedule as declared in code and return its :class:`ScheduleSpec`.

    Durations accept seconds, ``timedelta`` or text (``"15m"``, ``"1 day"``); ``start_at``/``end_at`` accept
    aware datetimes or epoch seconds. Every mistake raises :class:`~durable_tasks.errors.ConfigurationError`
    naming the schedule, the bad value and what to write instead.

    >>> parse_schedule("weekly-report", "0 9 * * MON", tz="Europe/Berlin", catch_up="latest").cron
    '0 9 * * MON'
    >>> parse_schedule("heartbeat", every="15m").every
    900.0
    """
    label = f"Schedule {name!r}"
    if cron is not None and not isinstance(cron, str):
        raise ConfigurationError(f"{label}: cron must be text such as '0 9 * * MON'; got {cron!r}.")
    return ScheduleSpec(
        name=name,
        cron=" ".join(cron.split()) if cron is not None else None,
        every=_seconds(label, "every", every) if every is not None else None,
        tz=_zone_name(label, tz),
        overlap=_choice(label, "overlap", overlap, Overlap),
        buffer_limit=buffer_limit,
        catch_up=_choice(label, "catch_up", catch_up, CatchUp),
        catch_up_window=_seconds(label, "catch_up_window", catch_up_window),
        jitter=_seconds(label, "jitter", jitter) if jitter is not None else 0.0,
        start_at=_instant(label, "start_at", start_at),
        end_at=_instant(label, "end_at", end_at),
        paused=bool(paused),
    )


def ticks_to_start(
    spec: ScheduleSpec,
    *,
    last_fired: float | None,
    now: float,
    grace: float | None = None,
    limit: int = MAX_CATCH_UP_TICKS,
) -> list[float]:
    """The nominal ticks to start at ``now``, oldest first, per the schedule's catch-up policy.

    A tick is *due* once ``spec.fire_at(tick) <= now``. Only due ticks newer than ``last_fired`` (the newest
    tick already started) are considered, and a tick due longer than ``catch_up_window`` ago never runs:

    - ``all``: every such tick, oldest first, at most ``limit`` per call (call again with the last one returned
      as ``last_fired`` to page through a long backlog);
    - ``latest``: only the newest due tick;
    - ``none``: the newest due tick only if it is *current*, that is due at most ``grace`` seconds ago
      (default :attr:`ScheduleSpec.current_grace`: 60 s, less for short intervals): a scheduler that is briefly
      late still fires it, one back from downtime
      does not.

    A schedule that never fired (``last_fired=None``) starts only its current tick: it never backfills.
    A paused schedule starts nothing; a store should move ``last_fired`` forward while it is paused if the
    ticks missed during the pause must not be caught up on resume.

    >>> spec = parse_schedule("sync", every="1h", catch_up="all")
    >>> ticks_to_start(spec, last_fired=3600.0, now=4 * 3600.0 + 5)
    [7200.0, 10800.0, 14400.0]
    """
    if spec.paused:
        return []
    oldest = now - spec.catch_up_window
    policy = spec.catch_up
    if last_fired is None:
        policy, last_fired = CatchUp.NONE, -math.inf
    if policy is CatchUp.ALL:
        # A tick is due at tick + jitter <= tick + spec.jitter: start the scan a little before the window can
        # begin (the fire-time check below drops the extra ticks).
        after = max(last_fired, oldest - spec.jitter - _SCAN_MARGIN)
        found: list[float] = []
        for tick in spec._ticks(after):
            # Stop at the first tick not yet due, so what is returned is always a prefix of the backlog and
            # `last_fired` can move to its end.
            if len(found) >= limit or spec.fire_at(tick) > now:
                break
            if spec.fire_at(tick) >= oldest:
                found.append(tick)
        return found
    latest = _latest_due(spec, after=last_fired, now=now)
    if latest is None:
        return []
    age = now - spec.fire_at(latest)
    if grace is None:
        grace = spec.current_grace
    if age > spec.catch_up_window or (policy is CatchUp.NONE and age > grace):
        return []
    return [latest]


class ScheduleCursor(NamedTuple):
    """Where a schedule stands after a firing pass: what to store on its row."""

    last_fired: float | None
    """The newest tick dealt with (started, or skipped by the catch-up policy or a pause)."""
    next_fire_at: float | None
    """When to look at the schedule again; ``None`` once it has ended."""


def advance(
    spec: ScheduleSpec,
    *,
    last_fired: float | None,
    started: list[float],
    now: float,
    limit: int = MAX_CATCH_UP_TICKS,
) -> ScheduleCursor:
    """The row's new ``last_fired`` and ``next_fire_at`` after starting ``started`` (from :func:`ticks_to_start`).

    Every tick due by ``now`` counts as dealt with, started or not: a tick skipped by ``catch_up`` or by a
    pause is never considered again. When ``catch_up="all"`` returned a full page (``limit`` ticks), the rest
    of the backlog is still waiting, so ``next_fire_at`` is ``now``. A new schedule starts from
    ``ScheduleCursor(last_fired=None, next_fire_at=created_at)``.

    >>> spec = parse_schedule("sync", every="1h")
    >>> advance(spec, last_fired=3600.0, started=[7200.0], now=7205.0)
    ScheduleCursor(last_fired=7200.0, next_fire_at=10800.0)
    """
    if spec.catch_up is CatchUp.ALL and started and len(started) >= limit:
        return ScheduleCursor(started[-1], now)
    handled = [tick for tick in (last_fired, started[-1] if started else None) if tick is not None]
    newest = _latest_due(spec, after=max(handled, default=-math.inf), now=now)
    if newest is not None:
        handled.append(newest)
    cursor = max(handled, default=None)
    # Every tick after the cursor is not yet due (the cursor is the newest due one), or none was ever due.
    upcoming = spec.next_tick(cursor if cursor is not None else now - spec.jitter)
    return ScheduleCursor(cursor, None if upcoming is None else spec.fire_at(upcoming))


def _latest_due(spec: ScheduleSpec, *, after: float, now: float) -> float | None:
    """The newest tick later than ``after`` whose fire time has come, or ``None``."""
    # Every tick at or before now - jitter is due, so the newest of them is a safe place to start scanning.
    seed = spec._newest_tick_at_or_before(now - spec.jitter)
    start = after if seed is None else max(after, seed - _SCAN_MARGIN)
    if start == -math.inf:
        start = now - spec.catch_up_window - spec.jitter
    latest = None
    for tick in spec._ticks(start):
        if tick > now:
            break
        if spec.fire_at(tick) <= now:
            latest = tick
    return latest


# -- validation helpers --------------------------------------------------------------------------------------


def _expression(cron: str) -> str:
    """The 5-field form of ``cron``: aliases expanded, upper case, single spaces."""
    text = " ".join(cron.split())
    return _ALIASES.get(text.lower(), text).upper()


def _check_cron(name: str, cron: str) -> None:
    label = f"Schedule {name!r}: cron expression {cron!r}"
    text = " ".join(cron.split())
    if text.startswith("@") and text.lower() not in _ALIASES:
        raise ConfigurationError(f"{label} is not an alias cron knows; use one of {', '.join(_ALIASES)}.")
    fields = _expression(cron).split(" ")
    if len(fields) != 5:
        hint = " (a seconds field is not supported; use every='30s' for sub-minute schedules)" if len(
            fields
        ) == 6 else ""
        raise ConfigurationError(
            f"{label} has {len(fields)} fields{hint}; write 5: minute hour day-of-month month day-of-week, "
            f"e.g. '0 9 * * MON', or an alias such as @daily."
        )
    try:
        first = next(CronSim(" ".join(fields), _GAP_REFERENCE), None)
    except CronSimError as exc:
        raise ConfigurationError(f"{label}: {_explain(fields, str(exc))}") from None
    if first is None:
        raise ConfigurationError(f"{label} matches no date in 50 years; check its day and month fields.")


def _explain(fields: list[str], message: str) -> str:
    """Turn cronsim's 'Bad hour' into which field is wrong, its text, and what it accepts."""
    field = message.removeprefix("Bad ").strip()
    if field not in _FIELDS:
        return f"{message}."
    index = _FIELDS.index(field)
    if field == "day-of-month":
        # A valid day that no listed month has (30 in February) is reported as a bad day-of-month too.
        try:
            CronSim(" ".join([*fields[:3], "*", fields[4]]), _GAP_REFERENCE)
        except CronSimError:
            pass
        else:
            return f"day-of-month '{fields[2]}' never occurs in month '{fields[3]}'."
    return f"bad {field} field '{fields[index]}': {_FIELD_RULES[field]}; {_FIELD_SYNTAX}."


def _zone(name: str, tz: str) -> tzinfo:
    if tz.upper() == "UTC":
        return UTC  # cronsim skips DST handling for this exact object
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        close = _close_zones(tz)
        hint = f" Did you mean {', '.join(repr(zone) for zone in close)}?" if close else ""
        raise ConfigurationError(
            f"Schedule {name!r}: unknown time zone {tz!r}.{hint} Use an IANA name such as 'Europe/Berlin' "
            "(install the 'tzdata' package on machines without system time zones)."
        ) from None


def _close_zones(tz: str) -> list[str]:
    zones = _zone_names()
    by_lower = {zone.lower(): zone for zone in zones}
    if tz.lower() in by_lower:
        return [by_lower[tz.lower()]]
    matches = difflib.get_close_matches(tz.lower(), by_lower, n=3, cutoff=0.6)
    return [by_lower[match] for match in matches]


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _zone_name(label: str, tz: str | tzinfo) -> str:
    if isinstance(tz, str):
        return tz.strip()
    if isinstance(tz, ZoneInfo):
        return tz.key
    if tz is UTC:
        return "UTC"
    raise ConfigurationError(f"{label}: tz={tz!r} has no IANA name; pass one as text, e.g. tz='Europe/Berlin'.")


def _choice(label: str, option: str, value: _Policy | str, kind: type[_Policy]) -> _Policy:
    if isinstance(value, kind):
        return value
    text = str(value).strip().lower().replace("-", "_")
    try:
        return kind(text)
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise ConfigurationError(f"{label}: {option}={value!r} is not a policy; use one of: {valid}.") from None


def _seconds(label: str, option: str, value: float | str | timedelta) -> float:
    try:
        seconds = parse_duration(value)
    except ConfigurationError as exc:
        if option == "every" and "negative" in str(exc):
            seconds = -1.0
        else:
            raise ConfigurationError(f"{label}: {option}: {exc}") from None
    if option == "every" and seconds <= 0:
        raise ConfigurationError(f"{label}: every={value!r} must be a positive interval, e.g. every='15m'.")
    return seconds


def _instant(label: str, option: str, value: datetime | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigurationError(
                f"{label}: {option}={value.isoformat()} has no time zone, so the instant is ambiguous; pass an "
                f"aware datetime, e.g. datetime(2025, 1, 1, tzinfo=ZoneInfo('Europe/Berlin')), or epoch seconds."
            )
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise ConfigurationError(f"{label}: {option}={value!r} must be an aware datetime or epoch seconds.")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
