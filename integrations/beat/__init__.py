"""Migrating from celery beat: read ``app.conf.beat_schedule`` and write the equivalent durable schedules.

::

    from durable_tasks.integrations.beat import read_beat_schedule, render_declarations

    result = read_beat_schedule(app)
    print(render_declarations(result))      # paste into your code
    for entry in result.unconverted:        # what stays in beat, and why
        print(entry.name, entry.reason)
"""

from .convert import KEPT_OPTIONS, BeatImport, ImportedSchedule, Unconverted, read_beat_schedule
from .render import render_declarations

__all__ = [
    "KEPT_OPTIONS",
    "BeatImport",
    "ImportedSchedule",
    "Unconverted",
    "read_beat_schedule",
    "render_declarations",
]
