"""Benchmark durable-tasks against plain Celery chains and against DBOS; prints the commit floor and four tables.

::

    python benchmarks/run.py              # defaults: 300 chains, 50 latency chains, growth to 1,000 steps
    python benchmarks/run.py --quick      # smaller sizes, fewer setups: about a minute

The commit floor of each store is measured first and last. Table 1 (task steps) runs N chains of 10 no-op
tasks on the same Redis with one fresh ``celery worker --pool=solo``: plain ``celery.chain`` and
``durable.chain`` on PostgreSQL, SQLite FULL and SQLite NORMAL, splitting each durable row's time per step
into plain, floor and the rest. Table 1b runs the same chains with ``--pool=prefork --concurrency=4`` and
with two solo workers. Table 3 (growth) runs one chain, and one equivalent workflow, of 10, 100 and 1,000
steps at a time. Table 2 (inline steps) runs M workflows of 10 ``ctx.step`` calls one after another with
``Workflow.run``, next to the same workflow written for DBOS, on PostgreSQL and on SQLite.

Every measurement runs in its own subprocess (``run.py _chains ...`` / ``run.py _inline ...``), which
writes its figures as JSON for this parent process to tabulate; that keeps DBOS, durable-tasks and the
Celery apps of different modes out of each other's way. The performance targets (issue 10, see
``benchmarks/README.md``) are reported as met or missed; a missed target never fails the script, an error
(a service down, a timeout) does, with exit status 1. See ``benchmarks/README.md`` for every column.
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
    sys.path.insert(0, str(REPO_ROOT))  # `python benchmarks/run.py` puts only benchmarks/ on the path

from benchmarks.chains import chain_child  # noqa: E402
from benchmarks.common import (  # noqa: E402
    CHAIN_LABELS,
    CHAIN_LENGTH,
    CHAIN_MODES,
    DEFAULT_PG,
    DEFAULT_REDIS,
    ENGINES,
    REPO,
    SETUP_LABELS,
    SETUPS,
    STORE_LABELS,
    WORKFLOW_STEPS,
    pg_execute,
    write_json,
)
from benchmarks.floor import measure_floors  # noqa: E402
from benchmarks.inline import inline_child  # noqa: E402
from benchmarks.tables import concurrency_table, floor_table, growth_table, inline_table, solo_table  # noqa: E402

FULL_MATRIX = [("solo", mode) for mode in CHAIN_MODES] + [("solo-events", "plain"), ("solo-events", "durable-pg")] + [
    (setup, mode) for setup in ("prefork4", "two-workers") for mode in CHAIN_MODES]
QUICK_MATRIX = [("solo", mode) for mode in ("plain", "durable-pg", "durable-sqlite")] + [
    (setup, mode) for setup in ("prefork4", "two-workers") for mode in ("plain", "durable-pg")]

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
    growth: list[int]
    growth_steps: int
    matrix: list[tuple[str, str]]
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
        began = time.monotonic()
        try:
            child.wait(timeout=budget + 60)  # the child has its own deadline; this is the backstop
        except subprocess.TimeoutExpired:
            progress.print(f"[red]{' '.join(argv[:3])} overran its budget of {budget:.0f} s; killed.[/]")
        finally:  # also on Ctrl-C: never leave a child or its worker behind
            if child.poll() is None:
                kill_group(child)
        if out.exists():
            progress.print(f"[dim]  ({time.monotonic() - began:.1f} s)[/]")
            data: dict[str, Any] = json.loads(out.read_text())
            return data
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        progress.print(f"[red]{' '.join(argv[:3])} produced no result (exit {child.returncode}).[/]")
        progress.print(tail, markup=False, highlight=False)
        return {"error": f"no result (exit status {child.returncode})"}


def chain_budget(plan: Plan, setup: str) -> float:
    steps = (plan.chains + plan.latency_chains + plan.chain_warmup) * CHAIN_LENGTH
    if setup == "solo":
        steps += 2 * len(plan.growth) * max(plan.growth_steps, max(plan.growth))
    return 90 + steps / 20


def inline_budget(plan: Plan) -> float:
    return 60 + (plan.workflows + plan.workflow_warmup) * WORKFLOW_STEPS / 25


def run_chains(plan: Plan, progress: Any) -> dict[tuple[str, str], dict[str, Any]]:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for setup, mode in plan.matrix:
            progress.print(f"[dim]table 1: {CHAIN_LABELS[mode]}, {SETUP_LABELS[setup]} ({plan.chains} chains)...[/]")
            argv = ["_chains", "--mode", mode, "--setup", setup, "--chains", str(plan.chains),
                    "--latency-chains", str(plan.latency_chains), "--warmup", str(plan.chain_warmup),
                    "--growth", ",".join(map(str, plan.growth)), "--growth-steps", str(plan.growth_steps),
                    "--pg", plan.pg, "--redis", plan.redis, "--broker-db", str(plan.broker_db),
                    "--results-db", str(plan.results_db), "--schema", f"durable_bench_chains_{plan.tag}"]
            results[(setup, mode)] = {"mode": mode, **run_child(argv, chain_budget(plan, setup), progress)}
            if results[(setup, mode)].get("error"):
                progress.print(f"[red]{mode} ({setup}) failed:[/]")
                progress.print(results[(setup, mode)]["error"], markup=False, highlight=False)
    finally:  # a killed child cannot drop its schema: make sure nothing is left behind
        try:
            pg_execute(plan.pg, f'DROP SCHEMA IF EXISTS "durable_bench_chains_{plan.tag}" CASCADE')
        except Exception as exc:
            progress.print(f"[yellow]could not drop the benchmark schema: {exc}[/]")
    return results


def run_inline(plan: Plan, progress: Any) -> dict[tuple[str, str], dict[str, Any]]:
    runs = [("durable", "postgresql"), ("dbos", "postgresql"), ("durable", "sqlite-full"),
            ("durable", "sqlite-normal"), ("dbos", "sqlite")]
    results: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for system, store in runs:
            name = "durable-tasks" if system == "durable" else "DBOS"
            engine = "postgresql" if store == "postgresql" else "sqlite"
            label = STORE_LABELS.get(store, "SQLite FULL")
            progress.print(f"[dim]table 2: {name} on {label} ({plan.workflows} workflows)...[/]")
            sync = "normal" if store == "sqlite-normal" else "full"
            argv = ["_inline", "--system", system, "--engine", engine, "--sync", sync,
                    "--workflows", str(plan.workflows), "--warmup", str(plan.workflow_warmup), "--pg", plan.pg,
                    "--redis", plan.redis,
                    "--broker-db", str(plan.broker_db), "--schema", f"durable_bench_inline_{plan.tag}",
                    "--dbos-database", f"durable_bench_dbos_{plan.tag}"]
            results[(system, store)] = {"system": name, "engine": engine,
                                        **run_child(argv, inline_budget(plan), progress)}
            if results[(system, store)].get("error"):
                progress.print(f"[red]{name} on {label} failed:[/]")
                progress.print(results[(system, store)]["error"], markup=False, highlight=False)
    finally:  # a killed child cannot drop its schema or database: make sure nothing is left behind
        try:
            pg_execute(plan.pg, f'DROP SCHEMA IF EXISTS "durable_bench_inline_{plan.tag}" CASCADE',
                       f'DROP DATABASE IF EXISTS "durable_bench_dbos_{plan.tag}" WITH (FORCE)')
        except Exception as exc:
            progress.print(f"[yellow]could not drop the benchmark schema/database: {exc}[/]")
    return results


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the clean-up in run_child/run_chains/run_inline


def parent(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 200)
    progress = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    quick = args.quick
    growth = [int(length) for length in (args.growth or ("10,50" if quick else "10,100,1000")).split(",")]
    plan = Plan(
        chains=args.chains if args.chains is not None else (20 if quick else 300),
        latency_chains=args.latency_chains if args.latency_chains is not None else (5 if quick else 50),
        chain_warmup=2 if quick else 10,
        workflows=args.workflows if args.workflows is not None else (20 if quick else 200),
        workflow_warmup=3 if quick else 20,
        pg=args.pg, redis=args.redis, broker_db=args.broker_db, results_db=args.results_db,
        growth=growth, growth_steps=50 if quick else 1000, matrix=QUICK_MATRIX if quick else FULL_MATRIX,
    )
    if args.only:
        plan.matrix = [(setup, mode) for setup, _, mode in (item.partition(":") for item in args.only.split(","))]
    began = time.monotonic()
    failed = False
    floor_schema = f"durable_bench_floor_{plan.tag}"
    progress.print("[dim]commit floor...[/]")
    floors = measure_floors(plan.pg, floor_schema)
    chain_results: dict[tuple[str, str], dict[str, Any]] = {}
    if not args.skip_chains:
        chain_results = run_chains(plan, progress)
        failed |= any(data.get("error") for data in chain_results.values())
    inline_results: dict[tuple[str, str], dict[str, Any]] = {}
    if not args.skip_inline:
        inline_results = run_inline(plan, progress)
        failed |= any(data.get("error") for data in inline_results.values())
    after = measure_floors(plan.pg, floor_schema)
    console.print(floor_table(floors, after))
    console.print()
    if chain_results:
        for table, lines in (solo_table(plan, chain_results, floors, after), concurrency_table(chain_results),
                             growth_table(chain_results, plan.growth)):
            console.print(table)
            for line in lines:
                console.print(f"  {line}")
            console.print()
        for (setup, mode), data in chain_results.items():
            if not data.get("error") and not data.get("clean_shutdown"):
                console.print(f"  note: the {CHAIN_LABELS[mode]} worker ({setup}) did not exit cleanly after SIGTERM")
    if inline_results:
        table, lines = inline_table(plan, inline_results)
        console.print(table)
        for line in lines:
            console.print(f"  {line}")
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
                        help="chains in the throughput phase (default 300; quick 20)")
    parser.add_argument("--latency-chains", type=positive,
                        help="chains run one at a time (default 50; quick 5)")
    parser.add_argument("--workflows", type=positive, help="timed inline workflows (default 200; quick 20)")
    parser.add_argument("--only", help="table 1's runs as SETUP:MODE,... (e.g. solo:plain,solo:durable-pg); "
                        f"setups {', '.join(SETUPS)}; modes {', '.join(CHAIN_MODES)}")
    parser.add_argument("--growth", help="run lengths of the growth table (default 10,100,1000; quick 10,50)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer setups, about a minute")
    parser.add_argument("--skip-chains", action="store_true", help="only table 2")
    parser.add_argument("--skip-inline", action="store_true", help="only tables 1, 1b and 3")
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
    chains.add_argument("--setup", choices=sorted(SETUPS), default="solo")
    chains.add_argument("--growth", default="")
    chains.add_argument("--growth-steps", type=int, default=1000)
    chains.add_argument("--warmup", type=int, default=10)
    chains.add_argument("--schema", required=True)
    inline = sub.add_parser("_inline", help=argparse.SUPPRESS)
    inline.add_argument("--system", choices=("durable", "dbos"), required=True)
    inline.add_argument("--engine", choices=ENGINES, required=True)
    inline.add_argument("--sync", choices=("full", "normal"), default="full")
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
