"""Firing durable schedules: each due tick starts one run, in the transaction that records the tick.

Every worker calls :func:`fire_due` every ``timer_interval``. It reads first (no lock), then takes one due
schedule at a time with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite's write transaction serialises
firers) and, in one transaction:

1. asks the calendar which ticks to start (:func:`~durable_tasks.schedules.ticks_to_start`: catch-up
   policy and window, pause);
2. applies the overlap policy against the schedule's active runs (:func:`plan_overlap`);
3. starts each tick's run under the key ``cron:<name>:<tick in UTC>`` (unique in the database, so no
   restart, failover or number of workers starts a tick twice; a second start is a no-op);
4. writes the row's new ``last_fired`` and ``next_fire_at`` (:func:`~durable_tasks.schedules.advance`),
   its bounded buffer of waiting ticks, and its missed and skipped counts.

A worker killed in the middle commits nothing: the next pass, in any worker, does it all again.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import uuid4

from . import transitions
from .errors import StoreUnavailableError
from .logs import RateLimitedLog
from .outbox import UnitOfWork
from .records import ScheduleRow
from .runtime import Runtime
from .schedules import CatchUp, Overlap, ScheduleSpec, advance, ticks_to_start
from .starting import start_scheduled
from .store import queries, schedule_queries
from .vocabulary import ACTIVE_RUN_STATUSES

logger = logging.getLogger("durable_tasks.scheduler")
_failures = RateLimitedLog(logger, every=60.0)

#: While ticks wait in a schedule's buffer, the schedule is looked at this often to see its run finish.
BUFFER_POLL = 1.0
#: ``cancel_other`` cancels at most this many active runs of a schedule per pass.
CANCEL_LIMIT = 100
#: Missed ticks of one pass are counted up to this many (a cron schedule back from a long downtime).
COUNT_LIMIT = 10_000
#: A schedule that failed to fire is looked at again after this many seconds (its ticks wait, none is lost).
RETRY_FAILED = 5.0


def tick_key(schedule: str, tick: float) -> str:
    """The idempotency key of a tick's run: ``cron:<schedule>:<tick as ISO 8601 UTC>``."""
    return f"cron:{schedule}:{datetime.fromtimestamp(tick, UTC).isoformat()}"


def trigger_key(schedule: str) -> str:
    """A fresh key for an extra run started by an operator (``durable cron trigger``)."""
    return f"cron:{schedule}:trigger:{uuid4().hex}"


def spec_of(row: ScheduleRow) -> ScheduleSpec:
    """The spec a schedule's row holds (paused by code or by an operator)."""
    return ScheduleSpec(
        name=row.name, cron=row.cron, every=row.every, tz=row.tz, overlap=Overlap(row.overlap),
        buffer_limit=row.buffer_limit, catch_up=CatchUp(row.catch_up), catch_up_window=row.catch_up_window,
        jitter=row.jitter, start_at=row.start_at, end_at=row.end_at, paused=bool(row.paused),
    )


@dataclass(frozen=True)
class OverlapPlan:
    """What the overlap policy makes of due ticks: start some, keep some waiting, drop the rest."""

    start: list[float] = field(default_factory=list)
    buffer: list[float] = field(default_factory=list)
    dropped: int = 0
    cancel_active: bool = False


def plan_overlap(spec: ScheduleSpec, *, buffered: list[float], due: list[float], active: bool) -> OverlapPlan:
    """Apply ``spec.overlap`` to the waiting (``buffered``) and newly ``due`` ticks, oldest first.

    ``active`` says whether a run of the schedule is still going. Temporal's semantics: ``skip`` starts a tick
    only when nothing runs (the oldest of a catch-up batch; the others are dropped); ``buffer_one`` keeps one
    tick waiting and ``buffer_all`` up to ``buffer_limit``, started one at a time as runs finish;
    ``cancel_other`` cancels the active runs and starts the newest tick; ``allow_all`` starts every tick.

    >>> spec = ScheduleSpec("s", cron=None, every=60.0, overlap=Overlap.BUFFER_ONE)
    >>> plan_overlap(spec, buffered=[], due=[60.0, 120.0, 180.0], active=False)
    OverlapPlan(start=[60.0], buffer=[120.0], dropped=1, cancel_active=False)
    """
    queue = [*buffered, *due]
    if spec.overlap is Overlap.ALLOW_ALL:
        return OverlapPlan(start=queue)
    if spec.overlap is Overlap.CANCEL_OTHER:
        if not queue:
            return OverlapPlan()
        return OverlapPlan(start=queue[-1:], dropped=len(queue) - 1, cancel_active=active)
    if spec.overlap is Overlap.SKIP:
        # Ticks a buffering policy left before the policy changed are dropped like any tick that overlaps.
        if active or not due:
            return OverlapPlan(dropped=len(queue))
        return OverlapPlan(start=due[:1], dropped=len(queue) - 1)
    limit = 1 if spec.overlap is Overlap.BUFFER_ONE else spec.buffer_limit
    start = queue[:1] if queue and not active else []
    waiting = queue[len(start):]
    return OverlapPlan(start=start, buffer=waiting[:limit], dropped=max(0, len(waiting) - limit))


def fire_due(runtime: Runtime, *, now: float | None = None, limit: int = 100) -> int:
    """Fire every schedule whose next fire time has come, at most ``limit``; returns how many runs started.

    ``now`` (default: the clock) is the moment the calendar is asked about, so tests can move time.
    """
    moment = time.time() if now is None else now
    with runtime.store.read() as conn:  # a read does not take SQLite's write lock
        if not schedule_queries.any_due_schedule(conn, moment):
            return 0
    started = 0
    failed: set[str] = set()
    for _ in range(limit):
        name: str | None = None
        try:
            with runtime.unit_of_work() as uow:
                row = schedule_queries.next_due_schedule(uow.conn, moment, failed)
                if row is None:
                    break
                name = row.name
                started += fire(uow, row, moment)
            _failures.recovered(row.name, "Schedule %r fires again.", row.name)
        except StoreUnavailableError:
            raise
        except Exception:
            if name is None:
                raise
            # One broken schedule must not hold up the others. Its cursor is unchanged, so no tick is lost;
            # it is looked at again a little later instead of on every pass.
            failed.add(name)
            _failures.exception(name, "Schedule %r could not fire; trying again in %gs.", name, RETRY_FAILED)
            with runtime.store.begin() as conn:
                schedule_queries.update_schedule(conn, name, next_fire_at=moment + RETRY_FAILED)
    return started


def fire(uow: UnitOfWork, row: ScheduleRow, now: float) -> int:
    """Fire one (locked) schedule at ``now``; returns how many runs it started."""
    spec = spec_of(row)
    buffered: list[float] = json.loads(row.buffered) if row.buffered else []
    due = ticks_to_start(spec, last_fired=row.last_fired, now=now)
    cursor = advance(spec, last_fired=row.last_fired, started=due, now=now)
    passed = count_ticks(spec, row.last_fired, cursor.last_fired) - len(due) if row.last_fired is not None else 0
    missed = 0 if spec.paused else passed
    skipped = passed if spec.paused else 0
    plan = OverlapPlan(buffer=buffered)  # paused: nothing starts, the buffer waits for the resume
    if not spec.paused and (due or buffered):
        active = _active_runs(uow, row.name, spec)
        plan = plan_overlap(spec, buffered=buffered, due=due, active=bool(active))
        if plan.cancel_active:
            _cancel(uow, active, row.name, plan.start[-1])
    last_run_id = row.last_run_id
    for tick in plan.start:
        run_id = start_scheduled(uow, workflow=row.workflow, fingerprint=row.fingerprint, input=row.input,
                                 idempotency_key=tick_key(row.name, tick), schedule=row.name, scheduled_for=tick)
        last_run_id = run_id or last_run_id
    next_fire_at = cursor.next_fire_at
    if plan.buffer and not spec.paused:
        next_fire_at = min(next_fire_at if next_fire_at is not None else math.inf, now + BUFFER_POLL)
    schedule_queries.update_schedule(
        uow.conn, row.name, last_fired=cursor.last_fired, next_fire_at=next_fire_at,
        buffered=json.dumps(plan.buffer) if plan.buffer else None, last_run_id=last_run_id,
        missed=row.missed + missed, skipped=row.skipped + skipped + plan.dropped, updated_at=time.time())
    if plan.start or plan.dropped or missed:
        logger.info("Schedule %r: started %d tick(s), %d waiting, %d skipped (overlap=%s), %d missed (catch_up=%s).",
                    row.name, len(plan.start), len(plan.buffer), plan.dropped, spec.overlap, missed, spec.catch_up)
    return len(plan.start)


def _active_runs(uow: UnitOfWork, name: str, spec: ScheduleSpec) -> list[str]:
    if spec.overlap is Overlap.ALLOW_ALL:
        return []  # no decision depends on them
    limit = CANCEL_LIMIT if spec.overlap is Overlap.CANCEL_OTHER else 1
    return schedule_queries.active_runs(uow.conn, name, limit)


def _cancel(uow: UnitOfWork, run_ids: list[str], name: str, tick: float) -> None:
    """``cancel_other``: cancel the schedule's active runs through the run's own transition (row lock first)."""
    reason = f"cancelled by tick {datetime.fromtimestamp(tick, UTC).isoformat()} of schedule {name!r} " \
             "(overlap='cancel_other')"
    for run_id in run_ids:
        run = queries.get_run(uow.conn, run_id, lock=True)
        if run is not None and run.status in ACTIVE_RUN_STATUSES:
            transitions.cancel_run(uow, run, reason)


def count_ticks(spec: ScheduleSpec, after: float | None, upto: float | None) -> int:
    """How many ticks lie in ``(after, upto]`` (an interval counts exactly; a cron scan stops at COUNT_LIMIT)."""
    if after is None or upto is None or upto <= after:
        return 0
    if spec.every is not None:
        anchor = spec.start_at if spec.start_at is not None else 0.0

        def index(moment: float) -> int:  # the newest k with anchor + k * every <= moment (rounding-safe)
            return math.floor((moment - anchor) / spec.every + 1e-9)  # type: ignore[operator]

        low = index(after)
        if spec.start_at is not None:
            low = max(low, -1)
        return max(0, index(upto) - low)
    return len(spec.ticks_between(after, upto, COUNT_LIMIT))
