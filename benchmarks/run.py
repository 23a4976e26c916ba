"""Benchmark durable-tasks against plain Celery chains and against DBOS; prints two tables.

::

    python benchmarks/run.py              # defaults: 300 chains, 50 latency chains, 200 workflows
    python benchmarks/run.py --quick      # a smaller run, well under a minute

Table 1 (task steps) runs N chains of 10 no-op tasks three ways on the same Redis, each with one fresh
``celery worker --pool=solo`` subprocess: plain ``celery.chain``, ``durable.chain`` on PostgreSQL and
``durable.chain`` on SQLite. Table 2 (inline steps) runs M workflows of 10 ``ctx.step`` calls one after
another with ``Workflow.run``, next to the same workflow written for DBOS, on PostgreSQL and on SQLite.

Every measurement runs in its own subprocess (``run.py _chains ...`` / ``run.py _inline ...``), which
writes its figures as JSON for this parent process to tabulate; that keeps DBOS, durable-tasks and the
Celery apps of different modes out of each other's way. The design targets (``/work/shared/design.md``,
"Performance budget") are reported as met or missed; a missed target never fails the script, an error
(a service down, a timeout) does, with exit status 1. See ``benchmarks/README.md`` for every column.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `python benchmarks/run.py` puts only benchmarks/ on the path

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
CHAIN_LENGTH = 10
WORKFLOW_STEPS = 10

# mode -> (BENCH_MODE of the worker app, store engine)
CHAIN_MODES: dict[str, tuple[str, str | None]] = {
    "plain": ("plain", None),
    "durable-pg": ("durable", "postgresql"),
    "durable-sqlite": ("durable", "sqlite"),
}
CHAIN_LABELS = {"plain": "plain celery.chain", "durable-pg": "durable.chain, PostgreSQL",
                "durable-sqlite": "durable.chain, SQLite"}
ENGINES = ("postgresql", "sqlite")
ENGINE_LABELS = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}

TARGET_RATIO_PG = 0.8
TARGET_MESSAGES = 1.0
TARGET_COMMITS = 2.0
TARGET_DBOS_RATIO = 2.0


# --- shared helpers ------------------------------------------------------------------------------------

def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def psycopg_dsn(url: str) -> str:
    """A libpq URL for psycopg from a SQLAlchemy URL such as ``postgresql+psycopg://...``."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_execute(url: str, *statements: str) -> None:
    """Run statements in autocommit mode (DDL such as CREATE/DROP DATABASE) with a bounded lock wait."""
    import psycopg

    with psycopg.connect(psycopg_dsn(url), autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET lock_timeout = '20s'")
        for statement in statements:
            conn.execute(statement)


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()


def quietly(cleanup: Callable[..., Any], *args: Any) -> None:
    """Run a clean-up step; report a failure on stderr instead of hiding the measurement's own outcome."""
    try:
        cleanup(*args)
    except Exception as exc:
        print(f"clean-up {cleanup.__name__}{args!r} failed: {exc}", file=sys.stderr)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def wait_for_file(path: Path, deadline: float, alive: Callable[[], bool], what: str) -> dict[str, Any]:
    """Poll for a JSON file written by the worker; fail early when the worker died."""
    while not path.exists():
        if not alive():
            raise RuntimeError(f"the worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


# --- table 1: chains of task steps (child process) ---------------------------------------------------

@dataclass
class ChainResult:
    mode: str
    chains: int = 0
    steps: int = 0
    wall: float = 0.0
    runs_per_s: float = 0.0
    steps_per_s: float = 0.0
    latency_chains: int = 0
    step_p50_ms: float = 0.0
    step_p99_ms: float = 0.0
    messages_bench: int = 0
    messages_worker: int = 0
    commits_bench: int = 0
    commits_worker: int = 0
    advisory_commits: int = 0
    messages_per_step: float = 0.0
    commits_per_step: float = 0.0
    clean_shutdown: bool = False
    error: str | None = None


class PlainChains:
    """Plain ``celery.chain``; only the last task stores its result (the fastest way to await a chain)."""

    def __init__(self, bench: Any) -> None:
        from celery import chain

        self._chain = chain
        self._inc = bench.inc

    def start(self) -> Any:
        inc = self._inc
        signatures = [inc.s(0).set(ignore_result=True)]
        signatures += [inc.s().set(ignore_result=True) for _ in range(CHAIN_LENGTH - 2)]
        signatures.append(inc.s())
        return self._chain(*signatures).apply_async()

    def wait(self, result: Any, deadline: float, interval: float) -> float:
        """Wait for the chain; return when it finished (the backend's ``date_done``, epoch seconds)."""
        value = result.get(timeout=max(0.1, deadline - time.monotonic()), interval=interval)
        if value != CHAIN_LENGTH:
            raise RuntimeError(f"plain chain returned {value!r}, expected {CHAIN_LENGTH}")
        done: float = result.date_done.timestamp()
        return done


class DurableChains:
    """``durable.chain(...)``; waits by reading the run from the store (what ``RunHandle.result`` does)."""

    def __init__(self, bench: Any) -> None:
        self._durable = bench.durable
        self._inc = bench.inc

    def start(self) -> Any:
        inc = self._inc
        return self._durable.chain(inc.s(0), *(inc.s() for _ in range(CHAIN_LENGTH - 1))).start()

    def wait(self, handle: Any, deadline: float, interval: float) -> float:
        """Wait for the run; return its ``finished_at`` as journaled by the worker (epoch seconds)."""
        while True:
            info = handle.info()
            if info.status == "succeeded":
                if info.result != CHAIN_LENGTH:
                    raise RuntimeError(f"durable chain returned {info.result!r}, expected {CHAIN_LENGTH}")
                finished: float = info.finished_at
                return finished
            if info.status in ("failed", "cancelled"):
                raise RuntimeError(f"durable chain {handle.id} ended {info.status}: {info.error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"durable chain {handle.id} still {info.status} at the deadline")
            time.sleep(interval)


def start_worker(mode: str, workdir: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "celery", "-A", "benchmarks.bench_app", "worker", "--pool=solo",
        "--concurrency=1", "--loglevel=warning", "--without-gossip", "--without-mingle",
        "--without-heartbeat", f"--hostname=bench-{mode}-{os.getpid()}@%h",
    ]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    log = (workdir / "worker.log").open("wb")
    try:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()  # the child has its own descriptor


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


def chain_child(args: argparse.Namespace) -> dict[str, Any]:
    """One mode of table 1: fresh Redis dbs, a fresh worker, warm-up, throughput phase, latency phase."""
    mode: str = args.mode
    app_mode, engine = CHAIN_MODES[mode]
    started = time.monotonic()
    deadline = started + args.budget
    workdir = Path(tempfile.mkdtemp(prefix=f"durable-bench-{mode}-"))
    broker = f"{args.redis}/{args.broker_db}"
    backend = f"{args.redis}/{args.results_db}"
    store = {"postgresql": args.pg, "sqlite": f"sqlite:///{workdir / 'store.sqlite3'}"}.get(engine or "", "")
    os.environ.update({
        "BENCH_MODE": app_mode, "BENCH_BROKER": broker, "BENCH_BACKEND": backend, "BENCH_STORE": store,
        "BENCH_SCHEMA": args.schema if engine == "postgresql" else "", "BENCH_STATS_DIR": str(workdir),
    })
    result = ChainResult(mode)
    worker: subprocess.Popen[bytes] | None = None
    bench: Any = None
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
        worker = start_worker(mode, workdir)

        def alive() -> bool:
            return worker is not None and worker.poll() is None

        wait_for_file(workdir / "ready", min(deadline, time.monotonic() + 60), alive, "the worker to start")

        for handle in [runner.start() for _ in range(args.warmup)]:
            runner.wait(handle, deadline, 0.01)
        bench.snapshot.delay("before.json")
        bench_before = bench.stats()  # read after sending the snapshot, so its message is not counted
        worker_before = wait_for_file(workdir / "before.json", deadline, alive, "the first snapshot")

        # Throughput: every chain in flight at once; wall time from the first start to the last finish.
        first_start = time.time()
        handles = [runner.start() for _ in range(args.chains)]
        finished = [runner.wait(handle, deadline, 0.05) for handle in handles]
        wall = max(finished) - first_start

        bench_after = bench.stats()  # read before sending the snapshot
        bench.snapshot.delay("after.json")
        worker_after = wait_for_file(workdir / "after.json", deadline, alive, "the second snapshot")

        # Latency: one chain at a time, start call to journaled/stored finish, divided by the chain length.
        # The completion time is the recorded one, so the polling interval only spaces the chains out.
        per_step: list[float] = []
        for _ in range(args.latency_chains):
            begun = time.time()
            handle = runner.start()
            per_step.append((runner.wait(handle, deadline, 0.02) - begun) / CHAIN_LENGTH)

        steps = args.chains * CHAIN_LENGTH
        result.chains, result.steps, result.wall = args.chains, steps, wall
        result.runs_per_s, result.steps_per_s = args.chains / wall, steps / wall
        result.latency_chains = len(per_step)
        result.step_p50_ms = percentile(per_step, 0.50) * 1000
        result.step_p99_ms = percentile(per_step, 0.99) * 1000
        result.messages_bench = bench_after["published"] - bench_before["published"]
        result.messages_worker = worker_after["published"] - worker_before["published"]
        result.commits_bench = bench_after["commits"] - bench_before["commits"]
        result.commits_worker = worker_after["commits"] - worker_before["commits"]
        result.messages_per_step = (result.messages_bench + result.messages_worker) / steps
        result.commits_per_step = (result.commits_bench + result.commits_worker) / steps
        result.advisory_commits = (worker_after.get("advisory_commits", 0) - worker_before.get("advisory_commits", 0)
                                   + bench_after.get("advisory_commits", 0) - bench_before.get("advisory_commits", 0))

        result.clean_shutdown = stop_worker(worker) and (workdir / "shutdown.json").exists()
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        log = workdir / "worker.log"
        if log.exists():
            result.error += "\n--- worker log (tail) ---\n" + log.read_text(errors="replace")[-3000:]
    finally:
        if worker is not None:
            stop_worker(worker)
        if bench is not None and bench.durable is not None:
            bench.durable.identity.stop()
            bench.durable.store.dispose()
        if engine == "postgresql":
            quietly(pg_execute, args.pg, f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        quietly(flush_redis, broker)
        quietly(flush_redis, backend)
        shutil.rmtree(workdir, ignore_errors=True)
    return asdict(result)


# --- table 2: inline steps, durable-tasks vs DBOS (child process) --------------------------------------

@dataclass
class InlineResult:
    system: str
    engine: str
    workflows: int = 0
    steps: int = 0
    wall: float = 0.0
    steps_per_s: float = 0.0
    workflow_p50_ms: float = 0.0
    workflow_p99_ms: float = 0.0
    commits_per_step: float = 0.0
    error: str | None = None


def bump(value: int) -> int:
    """The inline step: a trivial function returning a small value."""
    return value + 1


def time_workflows(call: Callable[[], Any], count: int, deadline: float) -> list[float]:
    """Call ``call`` ``count`` times, one after another; returns each call's seconds."""
    durations: list[float] = []
    for _ in range(count):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(durations)} of {count} workflows ran within the time budget")
        begun = time.perf_counter()
        call()
        durations.append(time.perf_counter() - begun)
    return durations


def fill_inline(result: InlineResult, durations: list[float], commits: int) -> None:
    result.workflows = len(durations)
    result.steps = len(durations) * WORKFLOW_STEPS
    result.wall = sum(durations)
    result.steps_per_s = result.steps / result.wall
    result.workflow_p50_ms = percentile(durations, 0.50) * 1000
    result.workflow_p99_ms = percentile(durations, 0.99) * 1000
    result.commits_per_step = commits / result.steps


def inline_durable(args: argparse.Namespace, workdir: Path, deadline: float) -> InlineResult:
    from celery import Celery

    from durable_tasks import Durable

    result = InlineResult("durable-tasks", args.engine)
    if args.engine == "postgresql":
        pg_execute(args.pg, f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        store, schema = args.pg, args.schema
    else:
        store, schema = f"sqlite:///{workdir / 'durable.sqlite3'}", None
    app = Celery("bench-inline", broker=f"{args.redis}/{args.broker_db}")
    durable = Durable(app, store=store, schema=schema, worker_services=False)
    try:
        durable.upgrade_database()

        @durable.workflow(name="bench.ten_inline_steps")
        def ten_steps(ctx: Any, start: int) -> int:
            value = start
            for _ in range(WORKFLOW_STEPS):
                value = ctx.step("bump", bump, value)
            return value

        def call() -> None:
            value = ten_steps.run(0).result()
            if value != WORKFLOW_STEPS:
                raise RuntimeError(f"workflow returned {value!r}")

        for _ in range(args.warmup):
            call()
        commits = durable.store.commits
        durations = time_workflows(call, args.workflows, deadline)
        fill_inline(result, durations, durable.store.commits - commits)
    finally:
        durable.identity.stop()
        durable.store.dispose()
        if args.engine == "postgresql":
            quietly(pg_execute, args.pg, f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
    return result


def inline_dbos(args: argparse.Namespace, workdir: Path, deadline: float) -> InlineResult:
    from dbos import DBOS
    from sqlalchemy import Engine, event

    result = InlineResult("DBOS", args.engine)
    commits = 0

    def count_commit(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(Engine, "commit", count_commit)  # DBOS's own engines are the only ones in this process
    if args.engine == "postgresql":
        pg_execute(args.pg, f'DROP DATABASE IF EXISTS "{args.dbos_database}" WITH (FORCE)',
                   f'CREATE DATABASE "{args.dbos_database}"')
        from sqlalchemy.engine import make_url

        url = make_url(args.pg).set(database=args.dbos_database).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{workdir / 'dbos.sqlite3'}"
    try:
        DBOS(config={"name": "durable-bench", "system_database_url": url, "log_level": "WARNING"})

        @DBOS.step()
        def dbos_bump(value: int) -> int:
            return bump(value)

        @DBOS.workflow()
        def ten_steps(start: int) -> int:
            value = start
            for _ in range(WORKFLOW_STEPS):
                value = dbos_bump(value)
            return value

        DBOS.launch()

        def call() -> None:
            value = ten_steps(0)
            if value != WORKFLOW_STEPS:
                raise RuntimeError(f"workflow returned {value!r}")

        for _ in range(args.warmup):
            call()
        before = commits
        durations = time_workflows(call, args.workflows, deadline)
        fill_inline(result, durations, commits - before)
    finally:
        DBOS.destroy(destroy_registry=True)
        if args.engine == "postgresql":
            quietly(pg_execute, args.pg, f'DROP DATABASE IF EXISTS "{args.dbos_database}" WITH (FORCE)')
    return result


def inline_child(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.budget
    workdir = Path(tempfile.mkdtemp(prefix=f"durable-bench-inline-{args.system}-"))
    try:
        run = inline_durable if args.system == "durable" else inline_dbos
        return asdict(run(args, workdir, deadline))
    except Exception as exc:
        system = "durable-tasks" if args.system == "durable" else "DBOS"
        return asdict(InlineResult(system, args.engine, error=f"{type(exc).__name__}: {exc}"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- the parent: run the children, print the tables ---------------------------------------------------

@dataclass
class Plan:
    chains: int
    latency_chains: int
    chain_warmup: int
    workflows: int
    workflow_warmup: int
    pg: str
    redis: str
    broker_db: int
    results_db: int
    tag: str = field(default_factory=lambda: f"{os.getpid()}")


def kill_group(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL, the process group this script created for ``child``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
            child.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def run_child(argv: list[str], budget: float, progress: Any) -> dict[str, Any]:
    """Run ``run.py <argv>`` in its own process group; kill the group (worker included) on overrun."""
    with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
        out, log_path = Path(tmp) / "result.json", Path(tmp) / "child.log"
        command = [sys.executable, str(Path(__file__).resolve()), *argv, "--budget", f"{budget:.0f}",
                   "--out", str(out)]
        with log_path.open("wb") as log:
            child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            child.wait(timeout=budget + 60)  # the child has its own deadline; this is the backstop
        except subprocess.TimeoutExpired:
            progress.print(f"[red]{' '.join(argv[:3])} overran its budget of {budget:.0f} s; killed.[/]")
        finally:  # also on Ctrl-C: never leave a child or its worker behind
            if child.poll() is None:
                kill_group(child)
        if out.exists():
            data: dict[str, Any] = json.loads(out.read_text())
            return data
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        progress.print(f"[red]{' '.join(argv[:3])} produced no result (exit {child.returncode}).[/]")
        progress.print(tail, markup=False, highlight=False)
        return {"error": f"no result (exit status {child.returncode})"}


def chain_budget(plan: Plan) -> float:
    return 90 + (plan.chains + plan.latency_chains + plan.chain_warmup) * CHAIN_LENGTH / 25


def inline_budget(plan: Plan) -> float:
    return 60 + (plan.workflows + plan.workflow_warmup) * WORKFLOW_STEPS / 25


def run_chains(plan: Plan, progress: Any) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    try:
        for mode in CHAIN_MODES:
            progress.print(f"[dim]table 1: {CHAIN_LABELS[mode]} ({plan.chains} chains)...[/]")
            argv = ["_chains", "--mode", mode, "--chains", str(plan.chains),
                    "--latency-chains", str(plan.latency_chains), "--warmup", str(plan.chain_warmup),
                    "--pg", plan.pg, "--redis", plan.redis, "--broker-db", str(plan.broker_db),
                    "--results-db", str(plan.results_db), "--schema", f"durable_bench_chains_{plan.tag}"]
            results[mode] = {"mode": mode, **run_child(argv, chain_budget(plan), progress)}
            if results[mode].get("error"):
                progress.print(f"[red]{mode} failed:[/]")
                progress.print(results[mode]["error"], markup=False, highlight=False)
    finally:  # a killed child cannot drop its schema: make sure nothing is left behind
        try:
            pg_execute(plan.pg, f'DROP SCHEMA IF EXISTS "durable_bench_chains_{plan.tag}" CASCADE')
        except Exception as exc:
            progress.print(f"[yellow]could not drop the benchmark schema: {exc}[/]")
    return results


def run_inline(plan: Plan, progress: Any) -> dict[tuple[str, str], dict[str, Any]]:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for engine in ENGINES:
            for system in ("durable", "dbos"):
                name = "durable-tasks" if system == "durable" else "DBOS"
                progress.print(f"[dim]table 2: {name} on {ENGINE_LABELS[engine]} "
                               f"({plan.workflows} workflows)...[/]")
                argv = ["_inline", "--system", system, "--engine", engine, "--workflows", str(plan.workflows),
                        "--warmup", str(plan.workflow_warmup), "--pg", plan.pg, "--redis", plan.redis,
                        "--broker-db", str(plan.broker_db), "--schema", f"durable_bench_inline_{plan.tag}",
                        "--dbos-database", f"durable_bench_dbos_{plan.tag}"]
                results[(system, engine)] = {"system": name, "engine": engine,
                                             **run_child(argv, inline_budget(plan), progress)}
                if results[(system, engine)].get("error"):
                    progress.print(f"[red]{name} on {engine} failed:[/]")
                    progress.print(results[(system, engine)]["error"], markup=False, highlight=False)
    finally:  # a killed child cannot drop its schema or database: make sure nothing is left behind
        try:
            pg_execute(plan.pg, f'DROP SCHEMA IF EXISTS "durable_bench_inline_{plan.tag}" CASCADE',
                       f'DROP DATABASE IF EXISTS "durable_bench_dbos_{plan.tag}" WITH (FORCE)')
        except Exception as exc:
            progress.print(f"[yellow]could not drop the benchmark schema/database: {exc}[/]")
    return results


def first_line(text: str) -> str:
    """The first line of an error, escaped for rich markup."""
    from rich.markup import escape

    return escape(text.strip().splitlines()[0]) if text.strip() else "unknown error"


def verdict(met: bool) -> str:
    return "[green]met[/]" if met else "[red]missed[/]"


def chains_table(plan: Plan, results: dict[str, dict[str, Any]]) -> tuple[Any, list[str]]:
    from rich.table import Table

    table = Table(title=f"Table 1 - task steps: {plan.chains} chains x {CHAIN_LENGTH} no-op tasks, "
                        "one solo worker, Redis broker",
                  caption=f"latency: {plan.latency_chains} chains run one at a time; counts from the "
                          "throughput phase, benchmark + worker processes")
    for header in ("mode", "wall s", "runs/s", "steps/s", "vs plain", "p50 ms/step", "p99 ms/step",
                   "+p50 ms", "+p99 ms", "msgs/step", "commits/step"):
        table.add_column(header, justify="left" if header == "mode" else "right")
    plain = results.get("plain", {})
    plain_ok = not plain.get("error")
    for mode, data in results.items():
        if data.get("error"):
            table.add_row(CHAIN_LABELS[mode], *["-"] * 10, style="red")
            continue
        is_plain = mode == "plain"
        ratio = data["steps_per_s"] / plain["steps_per_s"] if plain_ok else None
        table.add_row(
            CHAIN_LABELS[mode], f"{data['wall']:.2f}", f"{data['runs_per_s']:.1f}",
            f"{data['steps_per_s']:.0f}",
            "1.00" if is_plain else (f"{ratio:.2f}" if ratio is not None else "-"),
            f"{data['step_p50_ms']:.2f}", f"{data['step_p99_ms']:.2f}",
            "-" if is_plain or not plain_ok else f"{data['step_p50_ms'] - plain['step_p50_ms']:+.2f}",
            "-" if is_plain or not plain_ok else f"{data['step_p99_ms'] - plain['step_p99_ms']:+.2f}",
            f"{data['messages_per_step']:.2f}", f"{data['commits_per_step']:.2f}",
        )
    lines = [f"[red]error[/]: {CHAIN_LABELS[mode]}: {first_line(data['error'])}"
             for mode, data in results.items() if data.get("error")]
    pg = results.get("durable-pg", {})
    if plain_ok and pg and not pg.get("error"):
        ratio = pg["steps_per_s"] / plain["steps_per_s"]
        lines.append(f"target: durable.chain on PostgreSQL at >= {TARGET_RATIO_PG}x plain steps/s: {ratio:.2f}x, "
                     f"{verdict(ratio >= TARGET_RATIO_PG)}")
    for mode in ("durable-pg", "durable-sqlite"):
        data = results.get(mode, {})
        if not data or data.get("error"):
            continue
        messages, commits, steps = data["messages_per_step"], data["commits_per_step"], data["steps"]
        lines.append(f"target: {CHAIN_LABELS[mode]}: {TARGET_MESSAGES:.0f} broker message per step: {messages:.2f}, "
                     f"{verdict(messages <= TARGET_MESSAGES + 0.005)}")
        lines.append(f"target: {CHAIN_LABELS[mode]}: at most {TARGET_COMMITS:.0f} commits per step: {commits:.2f} "
                     f"(worker {data['commits_worker'] / steps:.2f} + benchmark process "
                     f"{data['commits_bench'] / steps:.2f}; of all, {data.get('advisory_commits', 0) / steps:.2f} "
                     f"advisory commits that do not wait for the disk), {verdict(commits <= TARGET_COMMITS + 0.005)}")
    return table, lines


def inline_table(plan: Plan, results: dict[tuple[str, str], dict[str, Any]]) -> tuple[Any, list[str]]:
    from rich.table import Table

    table = Table(title=f"Table 2 - inline steps: {plan.workflows} workflows x {WORKFLOW_STEPS} steps, "
                        "one after another, one process",
                  caption=f"after {plan.workflow_warmup} warm-up workflows; durable-tasks: Workflow.run(...)"
                          ".result(); DBOS 3.4: a direct call of the @DBOS.workflow")
    for header in ("store", "system", "wall s", "steps/s", "p50 ms/workflow", "p99 ms/workflow",
                   "commits/step", "durable/DBOS"):
        table.add_column(header, justify="left" if header in ("store", "system") else "right")
    lines: list[str] = []
    for engine in ENGINES:
        ours, theirs = results.get(("durable", engine), {}), results.get(("dbos", engine), {})
        ratio = (ours["steps_per_s"] / theirs["steps_per_s"]
                 if ours and theirs and not ours.get("error") and not theirs.get("error") else None)
        for data, is_ours in ((ours, True), (theirs, False)):
            if not data:
                continue
            if data.get("error"):
                table.add_row(ENGINE_LABELS[engine], data["system"], *["-"] * 6, style="red")
                lines.append(f"[red]error[/]: {data['system']} on {ENGINE_LABELS[engine]}: "
                             f"{first_line(data['error'])}")
                continue
            table.add_row(
                ENGINE_LABELS[engine], data["system"], f"{data['wall']:.2f}", f"{data['steps_per_s']:.0f}",
                f"{data['workflow_p50_ms']:.2f}", f"{data['workflow_p99_ms']:.2f}",
                f"{data['commits_per_step']:.2f}",
                f"{ratio:.2f}x" if is_ours and ratio is not None else "",
            )
        if ratio is not None:
            lines.append(f"target: inline steps on {ENGINE_LABELS[engine]} at >= {TARGET_DBOS_RATIO:.0f}x DBOS: "
                         f"{ratio:.2f}x, {verdict(ratio >= TARGET_DBOS_RATIO)}")
    return table, lines


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the clean-up in run_child/run_chains/run_inline


def parent(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 150)
    progress = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
    quick = args.quick
    plan = Plan(
        chains=args.chains if args.chains is not None else (30 if quick else 300),
        latency_chains=args.latency_chains if args.latency_chains is not None else (10 if quick else 50),
        chain_warmup=3 if quick else 10,
        workflows=args.workflows if args.workflows is not None else (30 if quick else 200),
        workflow_warmup=5 if quick else 20,
        pg=args.pg, redis=args.redis, broker_db=args.broker_db, results_db=args.results_db,
    )
    began = time.monotonic()
    failed = False
    if not args.skip_chains:
        chain_results = run_chains(plan, progress)
        table, lines = chains_table(plan, chain_results)
        console.print(table)
        for line in lines:
            console.print(f"  {line}")
        for mode, data in chain_results.items():
            if not data.get("error") and not data.get("clean_shutdown"):
                console.print(f"  note: the {CHAIN_LABELS[mode]} worker did not exit cleanly after SIGTERM")
        console.print()
        failed |= any(data.get("error") for data in chain_results.values())
    if not args.skip_inline:
        inline_results = run_inline(plan, progress)
        table, lines = inline_table(plan, inline_results)
        console.print(table)
        for line in lines:
            console.print(f"  {line}")
        failed |= any(data.get("error") for data in inline_results.values())
    progress.print(f"[dim]finished in {time.monotonic() - began:.0f} s[/]")
    return 1 if failed else 0


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chains", type=positive,
                        help="chains in the throughput phase (default 300; quick 30)")
    parser.add_argument("--latency-chains", type=positive,
                        help="chains run one at a time (default 50; quick 10)")
    parser.add_argument("--workflows", type=positive, help="timed inline workflows (default 200; quick 30)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    parser.add_argument("--skip-chains", action="store_true", help="only table 2")
    parser.add_argument("--skip-inline", action="store_true", help="only table 1")
    parser.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL URL (default {DEFAULT_PG})")
    parser.add_argument("--redis", default=DEFAULT_REDIS,
                        help=f"Redis URL without the db number (default {DEFAULT_REDIS})")
    parser.add_argument("--broker-db", type=int, default=13,
                        help="Redis db of the broker (flushed before and after; default 13)")
    parser.add_argument("--results-db", type=int, default=12,
                        help="Redis db of plain Celery's results (flushed; default 12)")
    sub = parser.add_subparsers(dest="internal", help=argparse.SUPPRESS)
    chains = sub.add_parser("_chains", help=argparse.SUPPRESS)
    chains.add_argument("--mode", choices=sorted(CHAIN_MODES), required=True)
    chains.add_argument("--warmup", type=int, default=10)
    chains.add_argument("--schema", required=True)
    inline = sub.add_parser("_inline", help=argparse.SUPPRESS)
    inline.add_argument("--system", choices=("durable", "dbos"), required=True)
    inline.add_argument("--engine", choices=ENGINES, required=True)
    inline.add_argument("--warmup", type=int, default=20)
    inline.add_argument("--schema", required=True)
    inline.add_argument("--dbos-database", required=True)
    for child in (chains, inline):
        # Children take the sizes and services after their own name; the parent passes every one.
        child.add_argument("--chains", type=positive, default=300)
        child.add_argument("--latency-chains", type=positive, default=50)
        child.add_argument("--workflows", type=positive, default=200)
        child.add_argument("--pg", default=DEFAULT_PG)
        child.add_argument("--redis", default=DEFAULT_REDIS)
        child.add_argument("--broker-db", type=int, default=13)
        child.add_argument("--results-db", type=int, default=12)
        child.add_argument("--budget", type=float, default=300.0, help="seconds before the child gives up")
        child.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # so that a killed child still stops its worker and cleans up
    if args.internal == "_chains":
        write_json(args.out, chain_child(args))
        return 0
    if args.internal == "_inline":
        write_json(args.out, inline_child(args))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
