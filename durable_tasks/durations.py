"""Parsing human durations such as ``"30 days"``, ``"1h30m"`` or ``90``."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

from .errors import ConfigurationError

_UNITS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")


def parse_duration(value: float | int | str | timedelta) -> float:
    """Seconds in ``value``: a number of seconds, a ``timedelta`` or text like ``"2 days"``, ``"1h30m"``.

    >>> parse_duration("1h30m")
    5400.0
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            seconds = 0.0
            position = 0
            for match in _PART.finditer(text):
                if match.start() != position or match.group(2) not in _UNITS:
                    raise ConfigurationError(_bad(value)) from None
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                position = match.end()
            if position != len(text) or not text:
                raise ConfigurationError(_bad(value)) from None
    else:
        raise ConfigurationError(_bad(value))
    if not math.isfinite(seconds):  # float("nan") and float("inf") read text such as "inf" too
        raise ConfigurationError(_bad(value))
    if seconds < 0:
        raise ConfigurationError(f"The duration {value!r} is negative.")
    return seconds


def epoch_seconds(when: datetime, what: str) -> float:
    """The UNIX time of an aware ``datetime``; a naive one is refused, since its moment depends on the machine.

    ``what`` names the call in the error, e.g. ``"ctx.sleep_until('renewal', ...)"``.
    """
    if not isinstance(when, datetime):
        raise ConfigurationError(f"{what} takes a datetime with a time zone, not {type(when).__name__} {when!r}.")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ConfigurationError(
            f"{what} got the naive datetime {when.isoformat()} (no time zone), so the moment it names depends on "
            "the zone of the machine that runs it. Say which zone it is in: "
            "when.replace(tzinfo=ZoneInfo('Europe/Berlin')) for a local wall-clock time, or "
            "datetime(..., tzinfo=timezone.utc) for UTC."
        )
    return when.timestamp()


def describe(seconds: float) -> str:
    """``seconds`` as short text for messages: ``"2d 3h"``, ``"90s"``."""
    if seconds < 120:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    return " ".join(parts[:2])


def _bad(value: object) -> str:
    return (
        f"Cannot read {value!r} as a duration. Use seconds (90), a timedelta, or text such as "
        "'30s', '10 minutes', '1h30m', '2 days'."
    )
