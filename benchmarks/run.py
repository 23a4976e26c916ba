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
    ENGINE_LABELS,
    ENGINES,
    REPO,
    TARGET_COMMITS,
    TARGET_DBOS_RATIO,
    TARGET_MESSAGES,
    TARGET_RATIO_PG,
    WORKFLOW_STEPS,
    pg_execute,
    write_json,
)
from benchmarks.inline import inline_child  # noqa: E402

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
                     f"{data['commits_bench'] / steps:.2f}; of all, {data.get('autocommit_commits', 0) / steps:.2f} "
                     f"autocommit commits that do not wait for the disk), {verdict(commits <= TARGET_COMMITS + 0.005)}")
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
