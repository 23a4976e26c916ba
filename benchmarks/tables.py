"""The benchmark's tables and target lines, built from the children's JSON figures (see ``README.md``)."""

from __future__ import annotations

from typing import Any

from benchmarks.common import (
    CHAIN_LABELS,
    CHAIN_LENGTH,
    ENGINE_LABELS,
    MODE_FLOOR,
    SETUP_LABELS,
    STORE_LABELS,
    TARGET_COMMITS,
    TARGET_DBOS_RATIO,
    TARGET_GROWTH_CHAIN,
    TARGET_GROWTH_WORKFLOW,
    TARGET_LATENCY_EXTRA_MS,
    TARGET_MESSAGES,
    TARGET_RATIO_PG,
    TARGET_SOLO_EXTRA_MS,
    WORKFLOW_STEPS,
)

Results = dict[tuple[str, str], dict[str, Any]]  # (setup, mode) -> a child's figures


def first_line(text: str) -> str:
    """The first line of an error, escaped for rich markup."""
    from rich.markup import escape

    return escape(text.strip().splitlines()[0]) if text.strip() else "unknown error"


def verdict(met: bool) -> str:
    return "[green]met[/]" if met else "[red]missed[/]"


def _table(title: str, caption: str, headers: list[str], left: int = 1) -> Any:
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index < left else "right")
    return table


def _ok(data: dict[str, Any] | None) -> bool:
    return bool(data) and not data.get("error")  # type: ignore[union-attr]


def floor_table(floors: dict[str, dict[str, float]], after: dict[str, dict[str, float]] | None) -> Any:
    table = _table("Commit floor: one single-row INSERT transaction, driver only, median of 300",
                   "measured at the start and at the end of this run; `floor` below is their mean",
                   ["store", "commit ms (start)", "commit ms (end)", "floor ms", "SELECT 1 ms"])
    for store, figures in floors.items():
        end = (after or {}).get(store)
        table.add_row(STORE_LABELS[store], f"{figures['commit_ms']:.3f}",
                      f"{end['commit_ms']:.3f}" if end else "-", f"{floor_of(floors, after, store):.3f}",
                      f"{figures['round_trip_ms']:.3f}" if figures["round_trip_ms"] else "-")
    return table


def floor_of(floors: dict[str, dict[str, float]], after: dict[str, dict[str, float]] | None, store: str) -> float:
    values = [figures[store]["commit_ms"] for figures in (floors, after or {}) if store in figures]
    return sum(values) / len(values)


def solo_table(plan: Any, results: Results, floors: dict[str, dict[str, float]],
               after: dict[str, dict[str, float]] | None) -> tuple[Any, list[str]]:
    """Table 1: one solo worker (and the same with -E): throughput, latency, messages and commits."""
    table = _table(f"Table 1 - task steps: {plan.chains} chains x {CHAIN_LENGTH} no-op tasks, one solo worker, "
                   "Redis broker",
                   f"latency: {plan.latency_chains} chains one at a time; CPU: worker processes during the "
                   "throughput phase; counts: benchmark + worker processes",
                   ["mode", "steps/s", "vs plain", "ms/step", "= plain", "+ floor", "+ rest", "CPU ms/step",
                    "p50 ms/step", "p99 ms/step", "+p50 ms", "+p99 ms", "msgs/step", "commits/step"])
    plain = results.get(("solo", "plain"))
    lines: list[str] = []
    rows = [(setup, mode) for setup, mode in results if setup in ("solo", "solo-events")]
    for setup, mode in rows:
        data = results[(setup, mode)]
        label = CHAIN_LABELS[mode] + (", -E" if setup == "solo-events" else "")
        if not _ok(data):
            table.add_row(label, *["-"] * 13, style="red")
            lines.append(f"[red]error[/]: {label}: {first_line(data.get('error') or '')}")
            continue
        ms = 1000 / data["steps_per_s"]
        split = ["-", "-", "-"]
        added = ["-", "-"]
        baseline = data is plain
        ratio = "1.00" if baseline else "-"
        if not baseline and _ok(plain):
            assert plain is not None
            plain_ms = 1000 / plain["steps_per_s"]
            if mode in MODE_FLOOR:
                floor = floor_of(floors, after, MODE_FLOOR[mode])
                split = [f"{plain_ms:.2f}", f"{floor:.2f}", f"{ms - plain_ms - floor:+.2f}"]
            added = [f"{data['step_p50_ms'] - plain['step_p50_ms']:+.2f}",
                     f"{data['step_p99_ms'] - plain['step_p99_ms']:+.2f}"]
            ratio = f"{data['steps_per_s'] / plain['steps_per_s']:.2f}"
        table.add_row(label, f"{data['steps_per_s']:.0f}", ratio, f"{ms:.2f}", *split,
                      f"{data['worker_cpu_ms_per_step']:.2f}", f"{data['step_p50_ms']:.2f}",
                      f"{data['step_p99_ms']:.2f}", *added,
                      f"{data['messages_per_step']:.2f}" if data["counted"] else "-",
                      f"{data['commits_per_step']:.2f}" if data["counted"] else "-")
    if _ok(plain):
        assert plain is not None
        lines += _solo_targets(results, plain, floors, after)
    return table, lines


def _solo_targets(results: Results, plain: dict[str, Any], floors: dict[str, dict[str, float]],
                  after: dict[str, dict[str, float]] | None) -> list[str]:
    lines = []
    pg = results.get(("solo", "durable-pg"))
    if _ok(pg):
        assert pg is not None
        floor = floor_of(floors, after, "postgresql")
        extra = 1000 / pg["steps_per_s"] - 1000 / plain["steps_per_s"]
        lines.append(f"target: one solo worker, PostgreSQL: ms/step within plain + one commit floor ({floor:.2f}) + "
                     f"{TARGET_SOLO_EXTRA_MS} ms: plain {extra:+.2f} ms, "
                     f"{verdict(extra <= floor + TARGET_SOLO_EXTRA_MS)}")
    for mode in ("durable-pg", "durable-sqlite", "durable-sqlite-normal"):
        data = results.get(("solo", mode))
        if not _ok(data):
            continue
        assert data is not None
        floor = floor_of(floors, after, MODE_FLOOR[mode])
        added = data["step_p50_ms"] - plain["step_p50_ms"]
        lines.append(f"target: {CHAIN_LABELS[mode]}: added p50 latency per step within one commit floor "
                     f"({floor:.2f}) + {TARGET_LATENCY_EXTRA_MS:.0f} ms: {added:+.2f} ms, "
                     f"{verdict(added <= floor + TARGET_LATENCY_EXTRA_MS)}")
        messages, steps, chains = data["messages_per_step"], data["steps"], data["chains"]
        worker, starts = data["commits_worker"] / steps, data["commits_bench"] / chains
        # Heartbeats (advisory commits, one per process every 2 s) ride on both: 5 % slack.
        lines.append(f"target: {CHAIN_LABELS[mode]}: {TARGET_MESSAGES:.0f} broker message per step: {messages:.2f}, "
                     f"{verdict(messages <= TARGET_MESSAGES + 0.005)}; at most {TARGET_COMMITS:.0f} commits per "
                     f"step and 1 per run to start it: {worker:.2f} per step in the worker, {starts:.2f} per run in "
                     f"the benchmark process ({data['commits_per_step']:.2f} per step in all, of which "
                     f"{data['autocommit_commits'] / steps:.2f} do not wait for the disk), "
                     f"{verdict(worker <= TARGET_COMMITS * 1.05 and starts <= 1.05)}")
    events, plain_events = results.get(("solo-events", "durable-pg")), results.get(("solo-events", "plain"))
    if _ok(pg) and _ok(events):
        assert pg is not None and events is not None
        cost = 1000 / events["steps_per_s"] - 1000 / pg["steps_per_s"]
        cpu = events["worker_cpu_ms_per_step"] - pg["worker_cpu_ms_per_step"]
        line = (f"note: task events (-E) cost durable, PostgreSQL {cost:+.2f} ms/step of throughput and {cpu:+.2f} ms "
                "of worker CPU per step")
        if _ok(plain_events):
            assert plain_events is not None
            line += (f"; plain Celery {1000 / plain_events['steps_per_s'] - 1000 / plain['steps_per_s']:+.2f} ms "
                     f"and {plain_events['worker_cpu_ms_per_step'] - plain['worker_cpu_ms_per_step']:+.2f} ms "
                     "(its own task events)")
        lines.append(line)
    return lines


def concurrency_table(results: Results) -> tuple[Any, list[str]]:
    """Table 1b: several steps in flight, prefork concurrency 4 and two solo workers, against plain."""
    table = _table("Table 1b - task steps with several in flight: steps/s against plain Celery on the same setup",
                   "CPU: every worker process (prefork children included) during the throughput phase, per step",
                   ["setup", "mode", "steps/s", "vs plain", "CPU ms/step", "CPU vs plain"], left=2)
    lines: list[str] = []
    for setup in ("prefork4", "two-workers"):
        plain = results.get((setup, "plain"))
        for (row_setup, mode), data in results.items():
            if row_setup != setup:
                continue
            if not _ok(data):
                table.add_row(SETUP_LABELS[setup], CHAIN_LABELS[mode], *["-"] * 4, style="red")
                lines.append(f"[red]error[/]: {SETUP_LABELS[setup]}, {CHAIN_LABELS[mode]}: "
                             f"{first_line(data.get('error') or '')}")
                continue
            ratio = cpu = "-"
            if _ok(plain):
                assert plain is not None
                ratio = f"{data['steps_per_s'] / plain['steps_per_s']:.2f}"
                cpu = f"{data['worker_cpu_ms_per_step'] / plain['worker_cpu_ms_per_step']:.2f}x"
            table.add_row(SETUP_LABELS[setup], CHAIN_LABELS[mode], f"{data['steps_per_s']:.0f}", ratio,
                          f"{data['worker_cpu_ms_per_step']:.2f}", cpu)
        pg = results.get((setup, "durable-pg"))
        if setup == "prefork4" and _ok(plain) and _ok(pg):
            assert plain is not None and pg is not None
            ratio_pg = pg["steps_per_s"] / plain["steps_per_s"]
            lines.append(f"target: {SETUP_LABELS[setup]}, PostgreSQL at >= {TARGET_RATIO_PG}x plain steps/s: "
                         f"{ratio_pg:.2f}x (CPU per step {pg['worker_cpu_ms_per_step']:.2f} ms against plain's "
                         f"{plain['worker_cpu_ms_per_step']:.2f}), {verdict(ratio_pg >= TARGET_RATIO_PG)}")
    return table, lines


def growth_table(results: Results, lengths: list[int]) -> tuple[Any, list[str]]:
    """Table 3: one run at a time of growing length, ms per step, chains and workflows."""
    table = _table("Table 3 - growth: one run of L no-op task steps at a time, one solo worker, median ms per step",
                   "ms per step: from the start call to the run's recorded finish, divided by L",
                   ["mode", "kind", *[f"L={length}" for length in lengths], "longest/shortest", "target"], left=2)
    lines: list[str] = []
    for (setup, mode), data in results.items():
        if setup != "solo" or not _ok(data):
            continue
        for kind, figures in data.get("growth", {}).items():
            values = [figures.get(str(length)) for length in lengths]
            known = [value for value in values if value is not None]
            ratio = known[-1] / known[0] if len(known) > 1 else None
            target = TARGET_GROWTH_CHAIN if kind == "chain" else TARGET_GROWTH_WORKFLOW
            table.add_row(CHAIN_LABELS[mode], kind, *[f"{value:.2f}" if value is not None else "-" for value in values],
                          f"{ratio:.2f}x" if ratio is not None else "-",
                          "-" if mode == "plain" else f"<= {target}x")
            if ratio is not None and mode != "plain":
                lines.append(f"target: {CHAIN_LABELS[mode]}, {kind}: ms/step at L={lengths[-1]} within {target}x of "
                             f"L={lengths[0]}: {ratio:.2f}x, {verdict(ratio <= target)}")
    return table, lines


def inline_table(plan: Any, results: dict[tuple[str, str], dict[str, Any]]) -> tuple[Any, list[str]]:
    """Table 2: workflows of inline steps, durable-tasks against DBOS on the same engine."""
    table = _table(f"Table 2 - inline steps: {plan.workflows} workflows x {WORKFLOW_STEPS} steps, one after "
                   "another, one process",
                   f"after {plan.workflow_warmup} warm-up workflows; durable-tasks: Workflow.run(...).result(); "
                   "DBOS: a direct call of the @DBOS.workflow (SQLite: its default rollback journal, FULL)",
                   ["store", "system", "wall s", "steps/s", "p50 ms/workflow", "p99 ms/workflow", "commits/step",
                    "durable/DBOS"], left=2)
    lines: list[str] = []
    for store in ("postgresql", "sqlite-full", "sqlite-normal"):
        engine = "postgresql" if store == "postgresql" else "sqlite"
        ours, theirs = results.get(("durable", store), {}), results.get(("dbos", engine), {})
        ratio = ours["steps_per_s"] / theirs["steps_per_s"] if _ok(ours) and _ok(theirs) else None
        rows = [(ours, STORE_LABELS[store])]
        if store != "sqlite-normal":
            rows.append((theirs, ENGINE_LABELS[engine] + (" FULL" if engine == "sqlite" else "")))
        for data, label in rows:
            if not data:
                continue
            if data.get("error"):
                table.add_row(label, data["system"], *["-"] * 6, style="red")
                lines.append(f"[red]error[/]: {data['system']} on {label}: {first_line(data['error'])}")
                continue
            table.add_row(label, data["system"], f"{data['wall']:.2f}", f"{data['steps_per_s']:.0f}",
                          f"{data['workflow_p50_ms']:.2f}", f"{data['workflow_p99_ms']:.2f}",
                          f"{data['commits_per_step']:.2f}",
                          f"{ratio:.2f}x" if data is ours and ratio is not None else "")
        if ratio is not None:
            lines.append(f"target: inline steps on {STORE_LABELS[store]} at >= {TARGET_DBOS_RATIO:.0f}x DBOS "
                         f"({ENGINE_LABELS[engine]}): {ratio:.2f}x, {verdict(ratio >= TARGET_DBOS_RATIO)}")
    return table, lines
