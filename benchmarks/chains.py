"""Table 1 and the growth table, in a child process: chains of task steps, plain ``celery.chain`` against
``durable.chain`` (and the equivalent durable workflow), on one setup of workers."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CHAIN_LENGTH,
    CHAIN_MODES,
    REPO,
    SETUPS,
    flush_redis,
    percentile,
    pg_execute,
    process_tree_cpu,
    quietly,
    wait_for_file,
)

# --- table 1: chains of task steps (child process) ---------------------------------------------------

@dataclass
class ChainResult:
    mode: str
    setup: str = "solo"
    chains: int = 0
    steps: int = 0
    wall: float = 0.0
    runs_per_s: float = 0.0
    steps_per_s: float = 0.0
    worker_cpu_ms_per_step: float = 0.0
    latency_chains: int = 0
    step_p50_ms: float = 0.0
    step_p99_ms: float = 0.0
    counted: bool = False
    messages_bench: int = 0
    messages_worker: int = 0
    commits_bench: int = 0
    commits_worker: int = 0
    autocommit_commits: int = 0
    messages_per_step: float = 0.0
    commits_per_step: float = 0.0
    growth: dict[str, dict[str, float]] = field(default_factory=dict)
    clean_shutdown: bool = False
    error: str | None = None


class PlainChains:
    """Plain ``celery.chain``; only the last task stores its result (the fastest way to await a chain)."""

    def __init__(self, bench: Any) -> None:
        from celery import chain

        self._chain = chain
        self._inc = bench.inc

    def start(self, length: int = CHAIN_LENGTH) -> Any:
        inc = self._inc
        signatures = [inc.s(0).set(ignore_result=True)]
        signatures += [inc.s().set(ignore_result=True) for _ in range(length - 2)]
        signatures.append(inc.s())
        return self._chain(*signatures).apply_async()

    def start_workflow(self, length: int) -> Any:
        raise NotImplementedError("plain Celery has no workflows")

    def wait(self, result: Any, deadline: float, interval: float, length: int = CHAIN_LENGTH) -> float:
        """Wait for the chain; return when it finished (the backend's ``date_done``, epoch seconds)."""
        value = result.get(timeout=max(0.1, deadline - time.monotonic()), interval=interval)
        if value != length:
            raise RuntimeError(f"plain chain returned {value!r}, expected {length}")
        done: float = result.date_done.timestamp()
        return done


class DurableChains:
    """``durable.chain(...)``; waits by reading the run from the store (what ``RunHandle.result`` does)."""

    def __init__(self, bench: Any) -> None:
        self._durable = bench.durable
        self._inc = bench.inc
        self._loop = bench.loop

    def start(self, length: int = CHAIN_LENGTH) -> Any:
        inc = self._inc
        return self._durable.chain(inc.s(0), *(inc.s() for _ in range(length - 1))).start()

    def start_workflow(self, length: int) -> Any:
        """The equivalent workflow: ``length`` calls of ``ctx.run(inc, value)`` (advanced by the worker)."""
        return self._loop.start(length)

    def wait(self, handle: Any, deadline: float, interval: float, length: int = CHAIN_LENGTH) -> float:
        """Wait for the run; return its ``finished_at`` as journaled by the worker (epoch seconds)."""
        while True:
            info = handle.info()
            if info.status == "succeeded":
                if info.result != length:
                    raise RuntimeError(f"durable run returned {info.result!r}, expected {length}")
                finished: float = info.finished_at
                return finished
            if info.status in ("failed", "cancelled"):
                raise RuntimeError(f"durable run {handle.id} ended {info.status}: {info.error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"durable run {handle.id} still {info.status} at the deadline")
            time.sleep(interval)


def start_workers(mode: str, setup: str, workdir: Path) -> list[subprocess.Popen[bytes]]:
    """The setup's worker processes (``SETUPS``), each logging to its own file in ``workdir``."""
    pool, concurrency, count, events = SETUPS[setup]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    workers = []
    for index in range(count):
        command = [
            sys.executable, "-m", "celery", "-A", "benchmarks.bench_app", "worker", f"--pool={pool}",
            f"--concurrency={concurrency}", "--loglevel=warning", "--without-gossip", "--without-mingle",
            "--without-heartbeat", f"--hostname=bench-{mode}-{setup}-{index}-{os.getpid()}@%h",
            *(["-E"] if events else []),
        ]
        log = (workdir / f"worker-{index}.log").open("wb")
        try:
            workers.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        finally:
            log.close()  # the child has its own descriptor
    return workers


def stop_worker(worker: subprocess.Popen[bytes]) -> bool:
    """SIGTERM (warm shutdown: ``worker_shutdown`` runs), SIGKILL after 30 s; True when it exited cleanly."""
    if worker.poll() is not None:
        return worker.returncode == 0
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
        return worker.returncode == 0
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=10)
        return False


def wait_ready(workdir: Path, count: int, deadline: float, alive: Any) -> None:
    while len(list(workdir.glob("ready-*"))) < count:
        if not alive():
            raise RuntimeError("a worker exited before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for the workers to start")
        time.sleep(0.02)


def growth(runner: PlainChains | DurableChains, lengths: list[int], steps_per_length: int, kind: str,
           deadline: float) -> dict[str, float]:
    """Median ms per step of one run of each length at a time (start call to recorded finish, over length)."""
    figures: dict[str, float] = {}
    for length in lengths:
        per_step = []
        for _ in range(max(1, steps_per_length // length)):
            begun = time.time()
            handle = runner.start(length) if kind == "chain" else runner.start_workflow(length)
            per_step.append((runner.wait(handle, deadline, 0.01, length) - begun) / length)
        figures[str(length)] = statistics.median(per_step) * 1000
    return figures


def chain_child(args: argparse.Namespace) -> dict[str, Any]:
    """One mode and setup of table 1: fresh Redis dbs, fresh workers, warm-up, throughput, latency, growth."""
    mode: str = args.mode
    setup: str = args.setup
    app_mode, engine, sqlite_sync = CHAIN_MODES[mode]
    started = time.monotonic()
    deadline = started + args.budget
    workdir = Path(tempfile.mkdtemp(prefix=f"durable-bench-{mode}-"))
    broker = f"{args.redis}/{args.broker_db}"
    backend = f"{args.redis}/{args.results_db}"
    store = {"postgresql": args.pg, "sqlite": f"sqlite:///{workdir / 'store.sqlite3'}"}.get(engine or "", "")
    os.environ.update({
        "BENCH_MODE": app_mode, "BENCH_BROKER": broker, "BENCH_BACKEND": backend, "BENCH_STORE": store,
        "BENCH_SCHEMA": args.schema if engine == "postgresql" else "", "BENCH_STATS_DIR": str(workdir),
        "BENCH_SQLITE_SYNC": sqlite_sync,
    })
    result = ChainResult(mode, setup)
    workers: list[subprocess.Popen[bytes]] = []
    bench: Any = None
    counted = SETUPS[setup][2] == 1 and SETUPS[setup][0] == "solo"  # one process holds every counter
    try:
        if engine == "postgresql":
            pg_execute(args.pg, f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        flush_redis(broker)
        flush_redis(backend)
        bench = importlib.import_module("benchmarks.bench_app")
        if bench.durable is not None:
            bench.durable.upgrade_database()
        runner: PlainChains | DurableChains = (
            PlainChains(bench) if app_mode == "plain" else DurableChains(bench))
        workers = start_workers(mode, setup, workdir)

        def alive() -> bool:
            return all(worker.poll() is None for worker in workers)

        wait_ready(workdir, len(workers), min(deadline, time.monotonic() + 60), alive)

        for handle in [runner.start() for _ in range(args.warmup)]:
            runner.wait(handle, deadline, 0.01)
        if counted:
            bench.snapshot.delay("before.json")
            bench_before = bench.stats()  # read after sending the snapshot, so its message is not counted
            worker_before = wait_for_file(workdir / "before.json", deadline, alive, "the first snapshot")
        cpu_before = sum(process_tree_cpu(worker.pid) for worker in workers)

        # Throughput: every chain in flight at once; wall time from the first start to the last finish.
        first_start = time.time()
        handles = [runner.start() for _ in range(args.chains)]
        finished = [runner.wait(handle, deadline, 0.05) for handle in handles]
        wall = max(finished) - first_start
        worker_cpu = sum(process_tree_cpu(worker.pid) for worker in workers) - cpu_before

        steps = args.chains * CHAIN_LENGTH
        result.chains, result.steps, result.wall = args.chains, steps, wall
        result.runs_per_s, result.steps_per_s = args.chains / wall, steps / wall
        result.worker_cpu_ms_per_step = worker_cpu * 1000 / steps
        if counted:
            bench_after = bench.stats()  # read before sending the snapshot
            bench.snapshot.delay("after.json")
            worker_after = wait_for_file(workdir / "after.json", deadline, alive, "the second snapshot")
            result.counted = True
            result.messages_bench = bench_after["published"] - bench_before["published"]
            result.messages_worker = worker_after["published"] - worker_before["published"]
            result.commits_bench = bench_after["commits"] - bench_before["commits"]
            result.commits_worker = worker_after["commits"] - worker_before["commits"]
            result.messages_per_step = (result.messages_bench + result.messages_worker) / steps
            result.commits_per_step = (result.commits_bench + result.commits_worker) / steps
            result.autocommit_commits = sum(
                after.get("autocommit_commits", 0) - before.get("autocommit_commits", 0)
                for before, after in ((worker_before, worker_after), (bench_before, bench_after)))

        if args.latency_chains and setup in ("solo", "solo-events"):
            # Latency: one chain at a time, start call to journaled/stored finish, divided by the chain length.
            # The completion time is the recorded one, so the polling interval only spaces the chains out.
            per_step: list[float] = []
            for _ in range(args.latency_chains):
                begun = time.time()
                handle = runner.start()
                per_step.append((runner.wait(handle, deadline, 0.02) - begun) / CHAIN_LENGTH)
            result.latency_chains = len(per_step)
            result.step_p50_ms = percentile(per_step, 0.50) * 1000
            result.step_p99_ms = percentile(per_step, 0.99) * 1000

        if args.growth and setup == "solo":
            lengths = [int(length) for length in args.growth.split(",")]
            result.growth["chain"] = growth(runner, lengths, args.growth_steps, "chain", deadline)
            if app_mode == "durable":
                result.growth["workflow"] = growth(runner, lengths, args.growth_steps, "workflow", deadline)

        result.clean_shutdown = all(stop_worker(worker) for worker in workers)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        for log in sorted(workdir.glob("worker-*.log")):
            result.error += f"\n--- {log.name} (tail) ---\n" + log.read_text(errors="replace")[-3000:]
    finally:
        for worker in workers:
            stop_worker(worker)
        if bench is not None and bench.durable is not None:
            bench.durable.close()
        if engine == "postgresql":
            quietly(pg_execute, args.pg, f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        quietly(flush_redis, broker)
        quietly(flush_redis, backend)
        shutil.rmtree(workdir, ignore_errors=True)
    return asdict(result)
