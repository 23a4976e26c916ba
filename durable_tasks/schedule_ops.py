"""What an operator does to schedules: list, pause, resume, trigger, backfill, and apply imported ones.

Used by the ``Durable`` methods and by ``durable cron``. Each action locks the schedule's row first (the firing
pass does too), so it never races a pass; runs start through :func:`~durable_tasks.starting.start_scheduled`
in the same transaction, and their first message goes through the outbox.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from .cron import TASK_WORKFLOW, Declaration
from .errors import InvalidStateError, ScheduleNotFoundError
from .outbox import UnitOfWork
from .records import ScheduleRow
from .schedule_sync import definition, fresh_cursor
from .scheduler import spec_of, tick_key, trigger_key
from .starting import start_scheduled
from .store import schedule_queries
from .store.database import Store
from .vocabulary import ScheduleSource

#: ``backfill`` starts at most this many ticks per call.
MAX_BACKFILL = 1000


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as ``durable cron list`` shows it. Times are epoch seconds (UTC)."""

    name: str
    app: str
    source: str
    """``code`` (synced by workers) or ``import`` (``durable cron import --apply``)."""
    target: str
    """What each tick starts: ``task proj.tasks.report`` or ``workflow proj.reports.weekly``."""
    calendar: str
    """``0 9 * * 1 (Europe/Berlin)`` or ``every 900s``."""
    overlap: str
    catch_up: str
    state: str
    """``active``, ``paused``, ``ended`` (past ``end_at``) or ``removed`` (no longer declared)."""
    next_tick: float | None
    last_tick: float | None
    last_run_id: str | None
    last_run_status: str | None
    missed: int
    skipped: int
    waiting: int
    """Ticks buffered until the active run finishes."""
    tz: str


class ScheduleOperations:
    """Operator actions on the schedules of one store."""

    def __init__(self, store: Store, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self.store = store
        self.unit_of_work = unit_of_work

    def overview(self, *, include_removed: bool = False, now: float | None = None) -> list[ScheduleInfo]:
        """Every schedule by name, with its next and last tick, last run and counts."""
        with self.store.read() as conn:
            rows = schedule_queries.list_schedules(conn, removed=include_removed)
        moment = time.time() if now is None else now
        return [_info(row, moment) for row in rows]

    def _locked(self, uow: UnitOfWork, name: str) -> ScheduleRow:
        row = schedule_queries.get_schedule(uow.conn, name, lock=True)
        if row is None:
            with self.store.read() as conn:
                known = [row.name for row in schedule_queries.list_schedules(conn)]
            raise ScheduleNotFoundError(
                f"No schedule named {name!r} in the durable store at {self.store.redacted_url()} "
                f"(schedules: {', '.join(known) or 'none'}). `durable cron list` shows them."
            )
        if row.removed_at is not None:
            raise InvalidStateError(
                f"Schedule {name!r} was removed (its code no longer declares it); declare it again to revive it."
            )
        return row

    def pause(self, name: str) -> None:
        """Pause a schedule: its ticks pass without runs (counted as skipped) until :meth:`resume`.

        A pause stays across deploys until an operator resumes it, or the code changes its ``paused=``.
        """
        with self.unit_of_work() as uow:
            self._locked(uow, name)
            schedule_queries.update_schedule(uow.conn, name, paused=True, updated_at=time.time())

    def resume(self, name: str) -> None:
        """Resume a paused schedule: the next pass starts its current tick (ticks missed while paused stay missed)."""
        with self.unit_of_work() as uow:
            row = self._locked(uow, name)
            now = time.time()
            # Look again at once (no later than planned); None means the schedule has ended.
            looked_at = {"next_fire_at": min(row.next_fire_at, now)} if row.next_fire_at is not None else {}
            schedule_queries.update_schedule(uow.conn, name, paused=False, updated_at=now, **looked_at)

    def trigger(self, name: str) -> str:
        """Start an extra run of the schedule now, under a key of its own; returns the run's id.

        It ignores the overlap policy and the pause, and its tick (``scheduled_for``) is this moment.
        """
        with self.unit_of_work() as uow:
            row = self._locked(uow, name)
            run_id = start_scheduled(uow, workflow=row.workflow, fingerprint=row.fingerprint, input=row.input,
                                     idempotency_key=trigger_key(name), schedule=name, scheduled_for=time.time())
            assert run_id is not None  # a fresh key
            schedule_queries.update_schedule(uow.conn, name, last_run_id=run_id, updated_at=time.time())
            return run_id

    def backfill(self, name: str, start: datetime | float, end: datetime | float) -> list[tuple[float, str]]:
        """Start the ticks from ``start`` to ``end`` (both included, at most now) that have no run yet.

        ``start`` and ``end`` are datetimes (naive ones are read in the schedule's time zone) or epoch seconds.
        Returns ``(tick, run id)`` of the runs started, oldest first. Ticks that already have a run (fired,
        or backfilled before) are left alone, so running it twice starts nothing new. The runs start together,
        whatever the overlap policy and the pause; at most ``MAX_BACKFILL`` ticks per call.
        """
        now = time.time()
        with self.unit_of_work() as uow:
            row = self._locked(uow, name)
            spec = spec_of(row)
            start, end = _epoch(start, spec.tz), _epoch(end, spec.tz)
            if end < start:
                raise InvalidStateError(f"Backfill of {name!r}: the range ends ({_iso(end)}) before it starts "
                                        f"({_iso(start)}); swap the two.")
            ticks = spec.ticks_between(math.nextafter(start, -math.inf), min(end, now), MAX_BACKFILL + 1)
            if len(ticks) > MAX_BACKFILL:
                raise InvalidStateError(
                    f"Backfill of {name!r} from {_iso(start)} to {_iso(end)} covers more than {MAX_BACKFILL} ticks; "
                    "split it into smaller ranges."
                )
            taken = schedule_queries.taken_keys(uow.conn, [tick_key(name, tick) for tick in ticks])
            started: list[tuple[float, str]] = []
            for tick in ticks:
                key = tick_key(name, tick)
                if key in taken:
                    continue
                run_id = start_scheduled(uow, workflow=row.workflow, fingerprint=row.fingerprint, input=row.input,
                                         idempotency_key=key, schedule=name, scheduled_for=tick)
                if run_id is not None:
                    started.append((tick, run_id))
            if started:
                schedule_queries.update_schedule(uow.conn, name, last_run_id=started[-1][1], updated_at=now)
            return started

    def apply(self, app: str, declarations: Sequence[Declaration]) -> list[tuple[str, str | None]]:
        """Write imported schedules (``durable cron import --apply``); returns each name with why it was not
        written (None: written).

        A name that code declares, or that another app owns, is left as it is. Applying again updates the
        imported schedules (a changed calendar starts over, like a new schedule).
        """
        outcome: list[tuple[str, str | None]] = []
        with self.unit_of_work() as uow:
            now = time.time()
            for item in declarations:
                row = schedule_queries.get_schedule(uow.conn, item.name, lock=True)
                values = definition(item)
                if row is None:
                    schedule_queries.insert_schedule(
                        uow.conn, name=item.name, app=app, source=ScheduleSource.IMPORT, declared_at=now,
                        created_at=now, updated_at=now, paused=item.spec.paused, missed=0, skipped=0, **values,
                        **fresh_cursor(now))
                elif row.source == ScheduleSource.CODE and row.removed_at is None:
                    outcome.append((item.name, f"a schedule named {item.name!r} is declared in the code of "
                                               f"{row.app}; it stays as the code declares it"))
                    continue
                elif row.app != app and row.removed_at is None:
                    outcome.append((item.name, f"the name belongs to a schedule of the Celery app {row.app!r}"))
                    continue
                else:
                    changes = dict(values)
                    if row.definition_hash != values["definition_hash"] or row.removed_at is not None:
                        changes.update(fresh_cursor(now))
                    schedule_queries.update_schedule(
                        uow.conn, item.name, app=app, source=ScheduleSource.IMPORT, removed_at=None, updated_at=now,
                        **changes)
                outcome.append((item.name, None))
        return outcome


def _info(row: ScheduleRow, now: float) -> ScheduleInfo:
    spec = spec_of(row)
    if row.removed_at is not None:
        state = "removed"
    elif row.paused:
        state = "paused"
    elif row.next_fire_at is None:
        state = "ended"
    else:
        state = "active"
    next_tick = None
    if state in ("active", "paused"):
        next_tick = spec.next_tick(row.last_fired if row.last_fired is not None else now - spec.jitter)
    calendar = f"{spec.cron} ({spec.tz})" if spec.cron is not None else f"every {spec.every:g}s"
    return ScheduleInfo(
        name=row.name, app=row.app, source=row.source, target=_target(row), calendar=calendar,
        overlap=row.overlap, catch_up=row.catch_up, state=state, next_tick=next_tick, last_tick=row.last_fired,
        last_run_id=row.last_run_id, last_run_status=getattr(row, "last_run_status", None), missed=row.missed,
        skipped=row.skipped, waiting=len(json.loads(row.buffered)) if row.buffered else 0, tz=spec.tz)


def _target(row: ScheduleRow) -> str:
    if row.workflow == TASK_WORKFLOW:
        return f"task {json.loads(row.input)['args'][0]}"
    return f"workflow {row.workflow}"


def _epoch(value: datetime | float, tz: str) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC if tz == "UTC" else ZoneInfo(tz))
        return value.timestamp()
    return float(value)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
