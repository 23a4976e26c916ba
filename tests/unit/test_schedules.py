"""The schedule calendar on fixed clocks: DST, anchoring, catch-up, jitter and every validation message."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from durable_tasks.errors import ConfigurationError
from durable_tasks.schedules import (
    CatchUp,
    Overlap,
    ScheduleCursor,
    ScheduleSpec,
    advance,
    parse_schedule,
    ticks_to_start,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def at(tz: str, *fields: int, fold: int = 0) -> float:
    """Epoch seconds of a local wall-clock time; ``fold=1`` picks the second of a repeated time."""
    return datetime(*fields, tzinfo=ZoneInfo(tz), fold=fold).timestamp()  # type: ignore[arg-type,misc]


def local(tz: str, epoch: float) -> str:
    return datetime.fromtimestamp(epoch, ZoneInfo(tz)).isoformat()


def following(spec: ScheduleSpec, after: float, count: int) -> list[str]:
    ticks = spec.ticks_between(after, after + 400 * 86400, count)
    return [local(spec.tz, tick) for tick in ticks]


# -- DST -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tz", "cron", "day", "expected"), [
    # Spring forward, Berlin 02:00 CET -> 03:00 CEST: 02:30 does not exist, the job runs once right after the gap.
    (BERLIN, "30 2 * * *", (2025, 3, 29), ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]),
    (BERLIN, "30 1 * * *", (2025, 3, 29), ["2025-03-30T01:30:00+01:00", "2025-03-31T01:30:00+02:00"]),
    # Fall back, Berlin 03:00 CEST -> 02:00 CET: 02:30 happens twice, the job runs once, at the first (CEST).
    (BERLIN, "30 2 * * *", (2025, 10, 25), ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]),
    (BERLIN, "30 1 * * *", (2025, 10, 25), ["2025-10-26T01:30:00+02:00", "2025-10-27T01:30:00+01:00"]),
    # New York: the gap is 02:00-03:00 EST->EDT in March; 01:00-02:00 repeats in November.
    (NEW_YORK, "30 2 * * *", (2025, 3, 8), ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]),
    (NEW_YORK, "30 1 * * *", (2025, 11, 1), ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"]),
    (NEW_YORK, "30 2 * * *", (2025, 11, 1), ["2025-11-02T02:30:00-05:00", "2025-11-03T02:30:00-05:00"]),
])
def test_daily_job_on_dst_days_runs_once(tz: str, cron: str, day: tuple[int, int, int], expected: list[str]) -> None:
    spec = parse_schedule("daily", cron, tz=tz)
    assert following(spec, at(tz, *day, 12), 2) == expected


def test_a_repeated_time_that_already_ran_is_not_run_again_from_inside_the_repeat() -> None:
    spec = parse_schedule("daily", "30 1 * * *", tz=NEW_YORK)
    second_pass = at(NEW_YORK, 2025, 11, 2, 1, 15, fold=1)  # 01:15 EST, 45 min after the 01:30 EDT run
    assert local(NEW_YORK, spec.next_tick(second_pass) or 0) == "2025-11-03T01:30:00-05:00"
    first_run = at(NEW_YORK, 2025, 11, 2, 1, 30)
    assert ticks_to_start(spec, last_fired=first_run - 86400, now=second_pass) == [first_run]


@pytest.mark.parametrize(("tz", "start", "expected"), [
    (BERLIN, (2025, 3, 30, 0, 30), ["01:00:00+01:00", "03:00:00+02:00", "04:00:00+02:00"]),
    (BERLIN, (2025, 10, 26, 0, 30), ["01:00:00+02:00", "02:00:00+02:00", "02:00:00+01:00", "03:00:00+01:00"]),
    (NEW_YORK, (2025, 3, 9, 0, 30), ["01:00:00-05:00", "03:00:00-04:00", "04:00:00-04:00"]),
    (NEW_YORK, (2025, 11, 2, 0, 30), ["01:00:00-04:00", "01:00:00-05:00", "02:00:00-05:00"]),
])
def test_hourly_job_runs_every_real_hour_across_dst(tz: str, start: tuple[int, ...], expected: list[str]) -> None:
    spec = parse_schedule("hourly", "@hourly", tz=tz)
    ticks = spec.ticks_between(at(tz, *start), at(tz, *start) + 86400, len(expected))
    assert [local(tz, tick)[11:] for tick in ticks] == expected
    assert {b - a for a, b in itertools.pairwise(ticks)} == {3600.0}


def test_weekly_monday_nine_berlin_keeps_local_time_across_dst() -> None:
    spec = parse_schedule("weekly-report", "0 9 * * MON", tz=BERLIN)
    assert following(spec, at(BERLIN, 2025, 3, 20, 0, 0), 3) == [
        "2025-03-24T09:00:00+01:00", "2025-03-31T09:00:00+02:00", "2025-04-07T09:00:00+02:00",
    ]
    ticks = spec.ticks_between(at(BERLIN, 2025, 10, 20, 9, 0) - 1, at(BERLIN, 2025, 10, 27, 9, 0), 5)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [7 * 86400 + 3600], "autumn week is 1 h longer"


def test_next_tick_is_strictly_after() -> None:
    spec = parse_schedule("weekly-report", "0 9 * * MON", tz=BERLIN)
    tick = at(BERLIN, 2025, 3, 24, 9, 0)
    assert spec.next_tick(tick - 0.5) == tick
    assert spec.next_tick(tick) == at(BERLIN, 2025, 3, 31, 9, 0)


# -- intervals -----------------------------------------------------------------------------------------------


def test_every_two_seconds_is_anchored_to_the_epoch() -> None:
    spec = parse_schedule("fast", every="2s")
    assert spec.ticks_between(1001.3, 1008, 10) == [1002.0, 1004.0, 1006.0, 1008.0]
    assert spec.next_tick(1002.0) == 1004.0


def test_every_fifteen_minutes_is_on_the_utc_quarter_hour_and_ignores_dst() -> None:
    spec = parse_schedule("quarterly", every=timedelta(minutes=15), tz=BERLIN)
    now = datetime(2025, 10, 26, 0, 7, 31, tzinfo=UTC).timestamp()  # Berlin falls back at 01:00 UTC
    ticks = spec.ticks_between(now, now + 7200, 8)
    assert [datetime.fromtimestamp(tick, UTC).strftime("%H:%M:%S") for tick in ticks[:3]] == [
        "00:15:00", "00:30:00", "00:45:00",
    ]
    assert {b - a for a, b in itertools.pairwise(ticks)} == {900.0}


def test_intervals_count_from_start_at_and_stop_at_end_at() -> None:
    start = datetime(2025, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)
    spec = parse_schedule("bounded", every=900, start_at=start, end_at=start.timestamp() + 1800)
    assert spec.next_tick(0.0) == start.timestamp(), "the first tick is start_at itself"
    assert spec.ticks_between(0.0, 1e12, 10) == [start.timestamp() + offset for offset in (0, 900, 1800)]
    assert spec.next_tick(start.timestamp() + 1800) is None


def test_cron_respects_start_at_and_end_at() -> None:
    start = at(BERLIN, 2025, 3, 31, 9, 0)
    spec = parse_schedule("weekly", "0 9 * * MON", tz=BERLIN, start_at=start, end_at=start + 7 * 86400)
    assert spec.ticks_between(0.0, 1e12, 5) == [start, start + 7 * 86400]
    assert spec.next_tick(start + 7 * 86400) is None


# -- catch-up ------------------------------------------------------------------------------------------------

HOUR = 3600.0


def hourly(catch_up: str, window: str = "1d", **options: object) -> ScheduleSpec:
    return parse_schedule("sync", every="1h", catch_up=catch_up, catch_up_window=window, **options)  # type: ignore[arg-type]


def test_catch_up_all_starts_every_missed_tick_in_the_window_oldest_first() -> None:
    now = 100 * HOUR + 10
    assert ticks_to_start(hourly("all"), last_fired=95 * HOUR, now=now) == [96 * HOUR, 97 * HOUR, 98 * HOUR,
                                                                            99 * HOUR, 100 * HOUR]
    assert ticks_to_start(hourly("all", "3h"), last_fired=50 * HOUR, now=now) == [98 * HOUR, 99 * HOUR, 100 * HOUR]


def test_catch_up_all_pages_through_a_long_backlog() -> None:
    spec = hourly("all", "30d")
    first = ticks_to_start(spec, last_fired=0.0, now=100 * HOUR, limit=40)
    second = ticks_to_start(spec, last_fired=first[-1], now=100 * HOUR, limit=40)
    assert first == [n * HOUR for n in range(1, 41)] and second == [n * HOUR for n in range(41, 81)]


def test_catch_up_latest_starts_only_the_newest_due_tick_in_the_window() -> None:
    assert ticks_to_start(hourly("latest"), last_fired=50 * HOUR, now=100 * HOUR + 10) == [100 * HOUR]
    assert ticks_to_start(hourly("latest", "5m"), last_fired=50 * HOUR, now=100 * HOUR + 301) == []
    assert ticks_to_start(hourly("latest"), last_fired=100 * HOUR, now=100 * HOUR + 10) == [], "already started"


def test_catch_up_none_starts_the_current_tick_only() -> None:
    spec = hourly("none")
    assert ticks_to_start(spec, last_fired=50 * HOUR, now=100 * HOUR + 59) == [100 * HOUR], "a late scheduler"
    assert ticks_to_start(spec, last_fired=50 * HOUR, now=100 * HOUR + 61) == [], "back from downtime"
    assert ticks_to_start(spec, last_fired=50 * HOUR, now=100 * HOUR + 300, grace=600) == [100 * HOUR]


def test_a_schedule_that_never_fired_starts_its_current_tick_and_never_backfills() -> None:
    assert ticks_to_start(hourly("all"), last_fired=None, now=100 * HOUR + 30) == [100 * HOUR]
    assert ticks_to_start(hourly("all"), last_fired=None, now=100 * HOUR + 1800) == []


def test_a_paused_schedule_starts_nothing() -> None:
    assert ticks_to_start(hourly("all", paused=True), last_fired=0.0, now=100 * HOUR) == []


def test_a_jittered_tick_is_due_only_at_its_fire_time() -> None:
    spec = hourly("latest", jitter="20m")
    delay = spec.jitter_for(100 * HOUR)
    assert ticks_to_start(spec, last_fired=98 * HOUR, now=100 * HOUR + delay) == [100 * HOUR]
    assert ticks_to_start(spec, last_fired=98 * HOUR, now=100 * HOUR + delay - 0.001) == [99 * HOUR]


def test_cron_catch_up_latest_after_a_week_of_downtime() -> None:
    spec = parse_schedule("report", "0 9 * * *", tz=BERLIN, catch_up="latest", catch_up_window="2d")
    now = at(BERLIN, 2025, 3, 31, 12, 0)
    assert ticks_to_start(spec, last_fired=at(BERLIN, 2025, 3, 24, 9, 0), now=now) == [at(BERLIN, 2025, 3, 31, 9, 0)]


# -- jitter and identity -------------------------------------------------------------------------------------


def test_jitter_is_deterministic_and_bounded() -> None:
    spec = parse_schedule("spread", every="1h", jitter="10m")
    again = parse_schedule("spread", every="1h", jitter=600)
    delays = [spec.jitter_for(n * HOUR) for n in range(500)]
    assert delays == [again.jitter_for(n * HOUR) for n in range(500)]
    assert all(0 <= delay <= 600 for delay in delays) and max(delays) > 500 and min(delays) < 100
    assert parse_schedule("other", every="1h", jitter="10m").jitter_for(HOUR) != spec.jitter_for(HOUR)
    assert parse_schedule("calm", every="1h").jitter_for(HOUR) == 0.0


def test_jitter_bound_is_half_the_shortest_gap() -> None:
    assert parse_schedule("q", "*/15 * * * *", jitter="450s").max_jitter == 450
    assert parse_schedule("d", "0 9,21 * * *").max_jitter == 6 * HOUR
    assert parse_schedule("i", every="2s").max_jitter == 1


def test_definition_hash_moves_with_the_calendar_only() -> None:
    base = parse_schedule("r", "0 9 * * MON", tz=BERLIN)
    assert base.definition_hash() == parse_schedule("r", "0  9 * * mon", tz=BERLIN, overlap="allow_all",
                                                    catch_up="all", paused=True).definition_hash()
    assert parse_schedule("d", "@daily").definition_hash() == parse_schedule("d", "0 0 * * *").definition_hash()
    changed = [
        parse_schedule("r", "0 10 * * MON", tz=BERLIN),
        parse_schedule("r", "0 9 * * MON", tz=NEW_YORK),
        parse_schedule("r", "0 9 * * MON", tz=BERLIN, jitter="1m"),
        parse_schedule("r", "0 9 * * MON", tz=BERLIN, start_at=0),
        parse_schedule("r", "0 9 * * MON", tz=BERLIN, end_at=2e9),
        parse_schedule("r", every="1h"),
    ]
    assert len({spec.definition_hash() for spec in [base, *changed]}) == 7


def test_parsed_values() -> None:
    spec = parse_schedule("r", "0 9 * * MON", tz=ZoneInfo(BERLIN), overlap=Overlap.BUFFER_ONE, catch_up="None",
                          catch_up_window=timedelta(hours=2), jitter="1m",
                          start_at=datetime(2025, 1, 1, tzinfo=ZoneInfo(BERLIN)), end_at=1.9e9)
    assert (spec.tz, spec.overlap, spec.catch_up, spec.catch_up_window, spec.jitter) == (
        BERLIN, Overlap.BUFFER_ONE, CatchUp.NONE, 7200.0, 60.0)
    assert (spec.start_at, spec.end_at) == (at(BERLIN, 2025, 1, 1), 1.9e9)
    assert parse_schedule("b", every=60, overlap="buffer-all").overlap is Overlap.BUFFER_ALL


# -- validation messages -------------------------------------------------------------------------------------

FIELD_RULES = "lists '1,15', low-to-high ranges '1-5' and steps '*/10' or '8-18/2' are allowed."


@pytest.mark.parametrize(("cron", "message"), [
    ("61 9 * * *", f"cron expression '61 9 * * *': bad minute field '61': minutes are 0-59; {FIELD_RULES}"),
    ("0 25 * * *", f"cron expression '0 25 * * *': bad hour field '25': hours are 0-23; {FIELD_RULES}"),
    ("0 9 32 * *", "bad day-of-month field '32': days are 1-31, or L (last day), LW (last weekday); "),
    ("0 9 * 13 *", "bad month field '13': months are 1-12 or JAN-DEC; "),
    ("0 9 * * MONDAY", "bad day-of-week field 'MONDAY': days are 0-7 (0 and 7 are Sunday) or SUN-SAT, "),
    ("5-1 * * * *", "bad minute field '5-1'"),
    ("0 9 30 2 *", "cron expression '0 9 30 2 *': day-of-month '30' never occurs in month '2'."),
    ("0 9 * *", "cron expression '0 9 * *' has 4 fields; write 5: minute hour day-of-month month day-of-week, "
                "e.g. '0 9 * * MON', or an alias such as @daily."),
    ("0 0 9 * * *", "has 6 fields (a seconds field is not supported; use every='30s' for sub-minute schedules)"),
    ("@reboot", "cron expression '@reboot' is not an alias cron knows; use one of @yearly, @annually, @monthly, "
                "@weekly, @daily, @midnight, @hourly."),
])
def test_invalid_cron_says_which_field_and_why(cron: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_schedule("report", cron)
    assert str(error.value).startswith("Schedule 'report': cron expression")
    assert message in str(error.value)


@pytest.mark.parametrize(("tz", "suggestion"), [
    ("Europe/Berln", "Did you mean 'Europe/Berlin'"),
    ("europe/berlin", "Did you mean 'Europe/Berlin'?"),
    ("Mars/Olympus", "unknown time zone 'Mars/Olympus'. Use an IANA name such as 'Europe/Berlin'"),
])
def test_unknown_time_zone_suggests_close_names(tz: str, suggestion: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^Schedule 'report': unknown time zone") as error:
        parse_schedule("report", "0 9 * * *", tz=tz)
    assert suggestion in str(error.value)


@pytest.mark.parametrize(("options", "message"), [
    ({"every": 60, "overlap": "skipp"},
     "overlap='skipp' is not a policy; use one of: skip, buffer_one, buffer_all, cancel_other, allow_all."),
    ({"every": 60, "catch_up": "some"}, "catch_up='some' is not a policy; use one of: all, latest, none."),
    ({"cron": "0 9 * * *", "every": 60},
     "give exactly one of cron (e.g. cron='0 9 * * MON') and every (e.g. every='15m'); both were given."),
    ({}, "give exactly one of cron (e.g. cron='0 9 * * MON') and every (e.g. every='15m'); neither was given."),
    ({"every": 0}, "every=0 must be a positive interval, e.g. every='15m'."),
    ({"every": -5}, "every=-5 must be a positive interval, e.g. every='15m'."),
    ({"every": "0.5s"}, "every=0.5 seconds is too short; intervals must be at least 1 second."),
    ({"every": "soon"}, "every: Cannot read 'soon' as a duration."),
    ({"every": 60, "jitter": "31s"}, "jitter of 31 s is more than half the shortest gap between two ticks (30 s "
                                     "allowed), so jittered runs could swap order; lower it."),
    ({"cron": "*/15 * * * *", "jitter": "8m"}, "jitter of 480 s is more than half the shortest gap"),
    ({"every": 60, "jitter": -1}, "jitter: The duration -1 is negative."),
    ({"every": 60, "start_at": datetime(2025, 1, 1)},
     "start_at=2025-01-01T00:00:00 has no time zone, so the instant is ambiguous; pass an aware datetime, "
     "e.g. datetime(2025, 1, 1, tzinfo=ZoneInfo('Europe/Berlin')), or epoch seconds."),
    ({"every": 60, "end_at": datetime(2025, 1, 1)}, "end_at=2025-01-01T00:00:00 has no time zone"),
    ({"every": 60, "start_at": True}, "start_at=True must be an aware datetime or epoch seconds."),
    ({"every": 60, "start_at": 1e9, "end_at": 9e8},
     "end_at (1998-07-09T16:00:00+00:00) is before start_at (2001-09-09T01:46:40+00:00); swap them or drop one."),
    ({"every": 60, "catch_up_window": 0}, "catch_up_window=0.0 must be positive, e.g. '1h' or '1d'."),
    ({"every": 60, "buffer_limit": 0}, "buffer_limit=0 must be between 1 and 1000."),
    ({"every": 60, "buffer_limit": 5000}, "buffer_limit=5000 must be between 1 and 1000."),
    ({"cron": 9}, "cron must be text such as '0 9 * * MON'; got 9."),
])
def test_invalid_declarations_say_what_to_write(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_schedule("report", **options)  # type: ignore[arg-type]
    assert str(error.value).startswith("Schedule 'report': ")
    assert message in str(error.value)


def test_a_schedule_needs_a_name() -> None:
    with pytest.raises(ConfigurationError, match="A schedule needs a non-empty name; got ''"):
        parse_schedule("", every=60)


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK])
@pytest.mark.parametrize("cron", ["30 1 * * *", "30 2 * * *", "0 * * * *", "*/20 1-3 * * SUN"])
def test_latest_tick_agrees_with_a_forward_scan_through_dst_nights(tz: str, cron: str) -> None:
    spec = parse_schedule("night", cron, tz=tz, catch_up_window="36h")
    nights = [(2025, 3, 30), (2025, 10, 26)] if tz == BERLIN else [(2025, 3, 9), (2025, 11, 2)]
    for night in nights:
        midnight = at(tz, *night, 0, 0)
        for now in (midnight + quarter * 900 + 7 for quarter in range(20)):
            scanned = spec.ticks_between(now - 1.5 * 86400, now, 1000)
            assert ticks_to_start(spec, last_fired=now - 1.5 * 86400, now=now) == scanned[-1:], local(tz, now)


def test_catch_up_all_stops_at_the_first_tick_not_yet_due() -> None:
    spec = hourly("all", jitter="20m")
    now = 100 * HOUR + spec.jitter_for(100 * HOUR) - 0.001
    assert ticks_to_start(spec, last_fired=97 * HOUR, now=now) == [98 * HOUR, 99 * HOUR]


def test_a_spec_rebuilt_from_a_database_row_equals_the_declared_one() -> None:
    declared = parse_schedule("r", "0 9 * * MON", tz=BERLIN, overlap="buffer_all", catch_up="all", jitter=60)
    row = {"name": "r", "cron": "0 9 * * MON", "every": None, "tz": BERLIN, "overlap": "buffer_all",
           "buffer_limit": 100, "catch_up": "all", "catch_up_window": 86400, "jitter": 60, "start_at": None,
           "end_at": None, "paused": False}
    rebuilt = ScheduleSpec(**row)  # type: ignore[arg-type]
    assert rebuilt == declared and rebuilt.overlap is Overlap.BUFFER_ALL
    assert rebuilt.definition_hash() == declared.definition_hash()
    assert ScheduleSpec("i", None, 900).definition_hash() == parse_schedule("i", every="15m").definition_hash()
    with pytest.raises(ConfigurationError, match="overlap='never' is not a policy; use one of: skip, "):
        ScheduleSpec(**{**row, "overlap": "never"})  # type: ignore[arg-type]


# -- the firing loop: ticks_to_start + advance -----------------------------------------------------------------


def test_advance_moves_past_ticks_the_policy_skipped() -> None:
    spec = hourly("none")
    now = 100 * HOUR + 600  # the 100h tick is 10 minutes old: not current, skipped
    assert ticks_to_start(spec, last_fired=90 * HOUR, now=now) == []
    assert advance(spec, last_fired=90 * HOUR, started=[], now=now) == ScheduleCursor(100 * HOUR, 101 * HOUR)


def test_advance_after_a_full_page_looks_again_at_once() -> None:
    spec = hourly("all", "30d")
    page = ticks_to_start(spec, last_fired=0.0, now=100 * HOUR, limit=10)
    assert advance(spec, last_fired=0.0, started=page, now=100 * HOUR, limit=10) == ScheduleCursor(10 * HOUR,
                                                                                                  100 * HOUR)


def test_advance_waits_for_a_jittered_tick_and_stops_when_the_schedule_ends() -> None:
    spec = hourly("latest", jitter="20m", end_at=101 * HOUR)
    pending = 100 * HOUR + spec.jitter_for(100 * HOUR)
    assert advance(spec, last_fired=99 * HOUR, started=[], now=pending - 1) == ScheduleCursor(99 * HOUR, pending)
    assert advance(spec, last_fired=101 * HOUR, started=[], now=101 * HOUR + 1800).next_fire_at is None


def test_a_new_schedule_waits_for_its_first_tick() -> None:
    spec = hourly("all")
    assert advance(spec, last_fired=None, started=[], now=100 * HOUR + 1800) == ScheduleCursor(100 * HOUR,
                                                                                              101 * HOUR)
    later = hourly("all", start_at=10 * HOUR)
    assert advance(later, last_fired=None, started=[], now=9.5 * HOUR) == ScheduleCursor(None, 10 * HOUR)


def simulate(spec: ScheduleSpec, start: float, end: float, down: tuple[float, float]) -> list[float]:
    """A scheduler that wakes exactly at each next_fire_at, except while it is down; returns the ticks started."""
    cursor, started = ScheduleCursor(None, start), []
    while cursor.next_fire_at is not None and cursor.next_fire_at <= end:
        now = down[1] if down[0] <= cursor.next_fire_at < down[1] else cursor.next_fire_at
        ticks = ticks_to_start(spec, last_fired=cursor.last_fired, now=now, limit=2)  # pages of 2 ticks
        started += ticks
        cursor = advance(spec, last_fired=cursor.last_fired, started=ticks, now=now, limit=2)
    return started


@pytest.mark.parametrize(("catch_up", "expected_after_downtime"), [
    # The window (2 h) reaches back to 00:40 CET; the local 02:00 and 02:30 do not exist that night.
    ("all", ["2025-03-30T01:00:00+01:00", "2025-03-30T01:30:00+01:00", "2025-03-30T03:00:00+02:00",
             "2025-03-30T03:30:00+02:00"]),
    ("latest", ["2025-03-30T03:30:00+02:00"]),
    ("none", []),
])
def test_a_scheduler_with_downtime_through_the_dst_gap(catch_up: str, expected_after_downtime: list[str]) -> None:
    spec = parse_schedule("half-hourly", "*/30 * * * *", tz=BERLIN, catch_up=catch_up, catch_up_window="2h",
                          jitter="5m")
    start, end = at(BERLIN, 2025, 3, 29, 23, 0), at(BERLIN, 2025, 3, 30, 6, 0)
    down = (at(BERLIN, 2025, 3, 30, 0, 10), at(BERLIN, 2025, 3, 30, 3, 40))  # 2.5 real hours, over the gap
    started = simulate(spec, start, end, down)
    every_tick = spec.ticks_between(start - 1, end, 100)
    assert len(started) == len(set(started)) and started == sorted(started)
    assert [tick for tick in started if tick < down[0]] == [tick for tick in every_tick if spec.fire_at(tick) < down[0]]
    assert [tick for tick in started if tick > down[1]] == [
        tick for tick in every_tick if tick > down[1] and spec.fire_at(tick) <= end
    ]
    caught_up = [local(BERLIN, tick) for tick in started if down[0] <= spec.fire_at(tick) and tick <= down[1]]
    assert caught_up == expected_after_downtime
