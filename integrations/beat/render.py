"""Python source for imported beat entries: ``durable.cron(...)`` declarations a user pastes into their code."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from .convert import BeatImport, ImportedSchedule

_ONE_LINE = 100
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def render_declarations(result: BeatImport, durable_name: str = "durable", app_name: str = "app") -> str:
    """Source code declaring each imported schedule on its Celery task, plus the unconverted entries as comments.

    Each declaration applies ``durable.cron`` to the registered task, e.g.
    ``durable.cron("0 9 * * 1", tz="Europe/Berlin", name="weekly-report")(app.tasks["proj.tasks.report"])``.
    """
    lines = [
        f"# Durable schedules imported from {app_name}.conf.beat_schedule: {len(result.schedules)} converted, "
        f"{len(result.unconverted)} left in beat.",
        f"# Paste them after `{durable_name} = Durable({app_name}, ...)`, then delete the converted entries from "
        "beat_schedule.",
    ]
    for imported in result.schedules:
        lines += ["", f"# {imported.name} (beat: {imported.source})"]
        lines += [_comment(f"note: {note}") for note in imported.notes]
        lines.append(_declaration(imported, durable_name, app_name))
    if result.unconverted:
        lines += ["", "# Not converted (keep them in beat, or declare them by hand):"]
        lines += [_comment(f"- {entry.name}: {entry.reason}") for entry in result.unconverted]
    return "\n".join(lines) + "\n"


def _declaration(imported: ImportedSchedule, durable_name: str, app_name: str) -> str:
    spec = imported.spec
    arguments = [_literal(spec.cron)] if spec.cron is not None else [f"every={_literal(_duration(spec.every))}"]
    if spec.cron is not None and spec.tz != "UTC":
        arguments.append(f"tz={_literal(spec.tz)}")
    arguments.append(f"name={_literal(imported.name)}")
    for keyword in ("args", "kwargs", "options"):
        value = getattr(imported, keyword)
        if value:
            arguments.append(f"{keyword}={_literal(value)}")
    target = f"({app_name}.tasks[{_literal(imported.task)}])"
    single = f"{durable_name}.cron({', '.join(arguments)}){target}"
    if len(single) <= _ONE_LINE:
        return single
    body = "".join(f"    {argument},\n" for argument in arguments)
    return f"{durable_name}.cron(\n{body}){target}"


def _duration(seconds: float | None) -> str | float:
    """``900`` as ``"15m"``, ``5400`` as ``"1h30m"``; fractions of a second stay a number."""
    assert seconds is not None
    if not float(seconds).is_integer():
        return seconds
    remaining, parts = int(seconds), []
    for unit, size in _UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _literal(value: Any) -> str:
    """A Python literal for a JSON value (double-quoted strings, True/False/None)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's string escapes are all valid in Python
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(key)}: {_literal(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def _comment(text: str) -> str:
    return "\n".join(textwrap.wrap(text, width=_ONE_LINE, initial_indent="# ", subsequent_indent="#   "))
