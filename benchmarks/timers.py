"""Durable timers end to end, database backend vs Kafka backend: capacity, lateness, memory, rows read.

::

    python benchmarks/timers.py            # 100,000 pending sleeps: about 3.5 minutes on 2 cores
    python benchmarks/timers.py --quick    # 10,000 pending sleeps, short phases: about a minute
    python benchmarks/timers.py --million  # 1,000,000 pending sleeps (never in CI)

Every measurement seeds a PostgreSQL schema of its own in bulk (``INSERT ... SELECT generate_series``: runs in
status ``sleeping``, their sleep steps, their timer rows) and, for the Kafka backend, the timer records too,
produced straight into the tier topics they would be in; then it starts the timer service as a separate process,
``python -m durable_tasks timers -A benchmarks.timer_app``, with that backend's settings. No Celery worker runs:
firing a sleep publishes an ``advance`` message into a Redis db of the benchmark's own, where it stays (this
measures firing, not the replay that follows it).

1. **capacity**: timers all due already, fired as fast as the service can (cut after 15 s). Timers/s per backend.
2. **steady runs**: timers come due at a steady rate, ``--fraction`` (0.4) of the lower capacity, for ``--span``
   seconds, once without and once with far-future timers pending (``--pending``, default 100,000): half due in 1
   to 23 hours (with Kafka: records in the 1 h and 6 h tiers), half in 2 to 30 days (with Kafka: rows in SQL,
   beyond the largest tier, not handed off yet). Per run: the service's peak RSS (``VmHWM``), timers fired per
   second, lateness (``fired_at - due_at`` from the timers table) p50/p99/max, how many fired early (must be 0),
   how many the Kafka reconciler fired, and the timers table's rows read per second (``pg_stat_user_tables``:
   ``seq_tup_read + idx_tup_fetch`` from the service's start to its exit).

Tables go to stdout (Markdown), progress to stderr. Exit status 0 when every measurement ran (targets are
reported, not enforced), 1 when one failed. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python benchmarks/timers.py` puts only benchmarks/ on the path

from benchmarks.common import DEFAULT_PG, DEFAULT_REDIS, REPO, flush_redis, pg_execute, quietly  # noqa: E402
from benchmarks.kafka_timers import start_tansu  # noqa: E402
from benchmarks.timer_fixtures import Firing, Group, Seeder, Service, TableStats  # noqa: E402

ADVANCE_QUEUE = "celery"  # where the advance messages of fired sleeps wait (Celery's default queue)
HOUR, DAY = 3600.0, 86400.0
# Group membership settles in about 3 s with these (over 15 s with librdkafka's defaults); as in the tests.
GROUP_SETTINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
P99_TARGET = 1.0


@dataclass(frozen=True)
class Plan:
    pending: int  # far-future timers of the "with" runs
    span: float  # seconds over which a steady run's timers come due
    lead: dict[str, float]  # per backend: seconds from seeding the due timers to the first due time
    capacity_timers: int
    capacity_seconds: float  # a capacity run is cut this long after its first fire
    fraction: float
    rate: float | None
    grace: float
    pg: str
    redis: str
    backends: tuple[str, ...]


@dataclass
class Outcome:
    """One measurement: what was seeded, what the service did, what the timers table says."""

    backend: str
    far_sql: int = 0
    far_kafka: int = 0
    due: int = 0
    firing: Firing = field(default_factory=Firing)
    reconciled: int = 0
    rss_ready_mb: float = 0.0
    rss_peak_mb: float = 0.0
    cpu_s: float = 0.0  # from the end of the service's start-up to the end of the measurement
    service_s: float = 0.0
    rows_read: int = 0
    seed_s: float = 0.0
    error: str = ""

    @property
    def far(self) -> int:
        return self.far_sql + self.far_kafka

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / max(self.service_s, 1e-9)

    @property
    def rows_per_fired(self) -> float:
        return self.rows_read / max(self.firing.fired, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 pending timers, short phases (about a minute)")
    parser.add_argument("--million", action="store_true", help="1,000,000 pending timers (never in CI)")
    parser.add_argument("--pending", type=int, help="far-future timers of the 'with' runs (default 100,000)")
    parser.add_argument("--span", type=float, help="seconds over which steady timers come due (default 30)")
    parser.add_argument("--fraction", type=float, default=0.4, help="steady rate as a fraction of capacity")
    parser.add_argument("--rate", type=float, help="steady timers due per second (default: fraction x capacity)")
    parser.add_argument("--capacity-timers", type=int, help="due timers of a capacity run (default 5,000)")
    parser.add_argument("--grace", type=float, default=30.0, help="the Kafka backend's timer_grace (default 30)")
    parser.add_argument("--backends", default="database,kafka", help="comma-separated: database, kafka")
    parser.add_argument("--pg", default=DEFAULT_PG, help="SQLAlchemy URL of the PostgreSQL database")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server URL (without a db number)")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis db for advance messages; FLUSHED")
    args = parser.parse_args()
    quick, million = args.quick, args.million
    plan = Plan(
        pending=args.pending if args.pending is not None else 1_000_000 if million else 10_000 if quick else 100_000,
        span=args.span or (4.0 if quick else 30.0),
        # Start-up: about 2 s for the service's imports; with Kafka about 3 s more to join the consumer group.
        lead={"database": 3.0, "kafka": 6.0} if quick else {"database": 5.0, "kafka": 8.0},
        capacity_timers=args.capacity_timers or (1_500 if quick else 5_000),
        capacity_seconds=4.0 if quick else 15.0, fraction=args.fraction, rate=args.rate, grace=args.grace,
        pg=args.pg, redis=f"{args.redis.rstrip('/')}/{args.redis_db}",
        backends=tuple(name.strip() for name in args.backends.split(",") if name.strip()),
    )
    if set(plan.backends) - {"database", "kafka"} or not plan.backends:
        parser.error(f"--backends takes database and/or kafka, not {args.backends!r}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (services, schemas, broker) as on Ctrl-C
    bench = Bench(plan)
    started = time.monotonic()
    try:
        return bench.run()
    finally:
        bench.close()
        progress(f"done in {time.monotonic() - started:.0f} s")


class Bench:
    """The measurements of one invocation; owns the Tansu broker and a scratch directory for service logs."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tag = os.getpid()
        self.count = 0
        self.workdir = Path(tempfile.mkdtemp(prefix="durable-timer-bench-"))
        self.broker: subprocess.Popen[bytes] | None = None
        self.bootstrap = ""
        self.failed = False

    def run(self) -> int:
        plan = self.plan
        if "kafka" in plan.backends:
            self.broker, port = start_tansu()
            self.bootstrap = f"127.0.0.1:{port}"
            progress(f"Tansu broker on {self.bootstrap}")
        capacity = {backend: self.capacity(backend) for backend in plan.backends}
        rates = [o.firing.per_s for o in capacity.values() if not o.error and o.firing.per_s]
        print_capacity(capacity)
        if not rates and plan.rate is None:
            progress("no capacity could be measured: no steady runs")
            return 1
        rate = plan.rate or plan.fraction * min(rates)
        steady = [self.steady(backend, rate, far) for backend in plan.backends for far in sorted({0, plan.pending})]
        print_steady(plan, rate, min(rates) if rates else None, steady)
        print_targets(plan, steady)
        return 1 if self.failed else 0

    def close(self) -> None:
        if self.broker is not None:
            self.broker.kill()
            self.broker.wait(10)
        quietly(flush_redis, self.plan.redis)
        if self.failed:
            progress(f"service logs kept in {self.workdir}")
            return
        for path in self.workdir.iterdir():
            path.unlink()
        self.workdir.rmdir()

    # --- the two kinds of measurement ---------------------------------------------------------------------

    def capacity(self, backend: str) -> Outcome:
        """Timers all due already: how many per second the service fires, flat out."""
        count = self.plan.capacity_timers
        progress(f"{backend}: capacity, {count:,} timers due at once")
        due = Group(1, count, time.time() - 1.0, 0.0, in_kafka=True)
        return self.measure(Outcome(backend, due=count), [], due, capacity=True)

    def steady(self, backend: str, rate: float, far: int) -> Outcome:
        """Timers due at ``rate`` for ``span`` seconds, with ``far`` far-future timers pending."""
        plan = self.plan
        count = max(1, round(rate * plan.span))
        hours, days = far // 2, far - far // 2
        now = time.time()
        far_groups = [group for group in (
            Group(1, hours, now + HOUR, 22 * HOUR / max(hours, 1), in_kafka=True),
            Group(hours + 1, days, now + 2 * DAY, 28 * DAY / max(days, 1), in_kafka=False),
        ) if group.count]
        in_kafka = backend == "kafka"
        outcome = Outcome(backend, far_sql=days if in_kafka else far, far_kafka=hours if in_kafka else 0, due=count)
        progress(f"{backend}: {count:,} timers due at {rate:,.0f}/s over {plan.span:.0f} s, {far:,} far-future")
        due = Group(far + 1, count, 0.0, plan.span / count, in_kafka=True)  # due_from: once the rest is seeded
        return self.measure(outcome, far_groups, due, capacity=False)

    def measure(self, outcome: Outcome, far_groups: list[Group], due: Group, *, capacity: bool) -> Outcome:
        """Seed, run the service until the due timers fired (or a deadline), read the results, clean up."""
        self.count += 1
        schema = f"durable_bench_timers_{self.tag}_{self.count}"
        settings = self.settings(outcome.backend, schema)
        # PGAPPNAME (read by libpq) tags the service's connections, to see when they are gone.
        env = {**os.environ, "PYTHONPATH": str(REPO), "TIMER_BENCH_BROKER": self.plan.redis,
               "TIMER_BENCH_SETTINGS": json.dumps(settings), "PGAPPNAME": schema}
        service: Service | None = None
        try:
            flush_redis(self.plan.redis)
            seeder = Seeder(self.plan.pg, schema, settings, self.bootstrap)
            try:
                started = time.time()
                for group in far_groups:
                    seeder.seed(group)
                if not capacity:  # the first due time is a lead after seeding, whatever seeding took
                    first_due = time.time() + self.plan.lead[outcome.backend]
                    due = Group(due.first, due.count, first_due, due.due_step, due.in_kafka)
                seeder.seed(due)
                seeder.analyze()
                outcome.seed_s = time.time() - started
            finally:
                seeder.close()
            stats = TableStats(self.plan.pg, schema)
            try:
                stats.wait_disconnected(seeder.application)  # its reads are counted as its backend exits
                before = stats.rows_read()
                service = Service(env, self.workdir / f"{self.count}-{outcome.backend}.log")
                outcome.rss_ready_mb, ready_cpu = service.rss_mb("VmRSS"), service.cpu_s()
                if capacity:
                    self.wait_fired(service, due.count, time.time() + 60 + 0.05 * due.count,
                                    cut_after=self.plan.capacity_seconds)
                else:  # the last due time, the reconciler's grace, and a margin
                    self.wait_fired(service, due.count, due.due_from + self.plan.span + self.plan.grace + 15)
                outcome.rss_peak_mb, outcome.cpu_s = service.rss_mb("VmHWM"), service.cpu_s() - ready_cpu
                # A capacity run is cut: `durable timers` finishes firing what is due before it heeds SIGTERM.
                outcome.service_s = service.stop(kill=capacity)
                outcome.reconciled = service.reconciled()
                stats.wait_disconnected(schema)  # its database backends flush their statistics as they exit
                outcome.rows_read = stats.rows_read() - before
                outcome.firing = stats.firing(due)
            finally:
                stats.close()
            if outcome.firing.fired < due.count and not capacity:
                outcome.error = f"{due.count - outcome.firing.fired} of {due.count} due timers did not fire"
        except Exception as exc:  # report it in the table, measure the rest
            outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            if service is not None:
                service.stop(kill=True)
            quietly(pg_execute, self.plan.pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            quietly(flush_redis, self.plan.redis)
        report(outcome)
        self.failed = self.failed or bool(outcome.error)
        return outcome

    def settings(self, backend: str, schema: str) -> dict[str, Any]:
        settings: dict[str, Any] = {"store": self.plan.pg, "schema": schema, "timer_backend": backend}
        if backend == "kafka":
            prefix = f"timer-bench-{self.tag}-{self.count}"  # fresh topics: nothing left from another run
            settings.update(kafka_servers=self.bootstrap, kafka_topic_prefix=prefix, kafka_group_id=prefix,
                            kafka_consumer_options=GROUP_SETTINGS, timer_grace=self.plan.grace)
        return settings

    def wait_fired(self, service: Service, count: int, deadline: float, cut_after: float | None = None) -> None:
        """Until ``count`` advance messages wait in Redis (one per fired sleep), the deadline passes, or
        ``cut_after`` seconds passed since the first. Redis, not the timers table: reading the table would count
        in the rows read."""
        import redis

        client = redis.Redis.from_url(self.plan.redis, socket_timeout=10)
        first = 0.0
        try:
            while time.time() < deadline:
                service.check_alive()
                fired = int(client.llen(ADVANCE_QUEUE))  # type: ignore[arg-type]
                first = first or (time.time() if fired else 0.0)
                if fired >= count or (cut_after is not None and first and time.time() - first >= cut_after):
                    return
                time.sleep(0.1)
        finally:
            client.close()


# --- the tables -------------------------------------------------------------------------------------------


def report(outcome: Outcome) -> None:
    """One progress line per measurement (stderr)."""
    if outcome.error:
        progress(f"  failed: {outcome.error}")
        return
    firing = outcome.firing
    progress(f"  {firing.fired:,} fired at {firing.per_s:,.0f}/s, lateness p99 {firing.p99:.3f} s, max "
             f"{firing.max:.3f} s; peak RSS {outcome.rss_peak_mb:.0f} MB; {outcome.rows_per_s:,.0f} rows read/s; "
             f"CPU {outcome.cpu_s:.1f} s; seeded in {outcome.seed_s:.1f} s")
    progress("  max lateness per tenth of the due span: " + " ".join(f"{late:.2f}" for late in firing.tenth_max))


def print_capacity(capacity: dict[str, Outcome]) -> None:
    print("\n**Capacity: timers all due at once, fired as fast as one timer service can**\n")
    print("| backend | due timers | fired | in s | timers/s | service CPU ms/timer |")
    print("|---|--:|--:|--:|--:|--:|")
    for backend, outcome in capacity.items():
        firing = outcome.firing
        if outcome.error:
            print(f"| {backend} | {outcome.due:,} | failed: {outcome.error.splitlines()[0]} | | | |")
            continue
        print(f"| {backend} | {outcome.due:,} | {firing.fired:,} | {firing.last - firing.first:.1f} | "
              f"{firing.per_s:,.0f} | {1000 * outcome.cpu_s / max(firing.fired, 1):.2f} |")
    sys.stdout.flush()


def print_steady(plan: Plan, rate: float, capacity: float | None, steady: list[Outcome]) -> None:
    basis = f"{plan.fraction:g} x the lower capacity, {capacity:,.0f}/s" if plan.rate is None and capacity else "--rate"
    print(f"\n**Steady runs: timers due at {rate:,.0f}/s ({basis}) for {plan.span:.0f} s**\n")
    print("| backend | far-future timers (SQL + Kafka) | due timers | fired/s | lateness p50 / p99 / max s | early "
          "| reconciler | RSS ready / peak MB | rows read/s | rows read / fired |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for outcome in steady:
        firing = outcome.firing
        far = f"{outcome.far:,}" + (f" ({outcome.far_sql:,} + {outcome.far_kafka:,})" if outcome.far_kafka else "")
        if outcome.error and not firing.fired:
            print(f"| {outcome.backend} | {far} | {outcome.due:,} | failed: {outcome.error.splitlines()[0]} "
                  "| | | | | | |")
            continue
        fired = f"{firing.per_s:,.0f}" + ("" if firing.fired == outcome.due else f" ({firing.fired:,} fired)")
        reconciled = str(outcome.reconciled) if outcome.backend == "kafka" else "-"
        print(f"| {outcome.backend} | {far} | {outcome.due:,} | {fired} | "
              f"{firing.p50:.3f} / {firing.p99:.3f} / {firing.max:.3f} | {firing.early} | {reconciled} | "
              f"{outcome.rss_ready_mb:.0f} / {outcome.rss_peak_mb:.0f} | {outcome.rows_per_s:,.0f} | "
              f"{outcome.rows_per_fired:.1f} |")


def print_targets(plan: Plan, steady: list[Outcome]) -> None:
    """The issue's targets, reported (never enforced)."""
    done = [outcome for outcome in steady if not outcome.error]
    print()
    late = [f"{o.backend} with {o.far:,}: {o.firing.p99:.3f} s" for o in done if o.firing.p99 >= P99_TARGET]
    print(f"- p99 lateness under {P99_TARGET:g} s: " + ("met" if not late else f"missed ({', '.join(late)})"))
    early = sum(outcome.firing.early for outcome in done)
    print("- never early: " + ("met" if early == 0 else f"missed ({early} fired early)"))
    stray = sum(outcome.firing.fired_far for outcome in done)
    print("- no far-future timer fired: " + ("met" if stray == 0 else f"missed ({stray} fired)"))
    for backend in plan.backends:
        runs = {o.far: o for o in done if o.backend == backend}
        without, with_far = runs.get(0), runs.get(plan.pending)
        if without is None or with_far is None or not plan.pending:
            continue
        print(f"- {backend}, {plan.pending:,} far-future timers vs none: rows read/s {with_far.rows_per_s:,.0f} vs "
              f"{without.rows_per_s:,.0f} ({with_far.rows_per_fired:.1f} vs {without.rows_per_fired:.1f} per fired "
              f"timer); peak RSS {with_far.rss_peak_mb:.0f} vs {without.rss_peak_mb:.0f} MB")


def progress(message: str) -> None:
    print(f"[timers] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
