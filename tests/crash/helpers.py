"""Checks shared by the crash tests: every run finished, and I1 held (nothing re-ran after its journal)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.support.stack import Stack


def assert_journal_never_re_executed(stack: Stack, run_ids: list[str]) -> Counter[str]:
    """I1: no step body started after that step's result was journaled; returns re-executions per step key.

    Each journal position holds one row by construction (its primary key), so "journaled once" means the
    recorded result is the only one; re-executions counted here are attempts killed before they journaled.
    """
    reruns: Counter[str] = Counter()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in stack.executions_of(None):
        if row["run"]:
            by_run.setdefault(row["run"], []).append(row)
    for run_id in run_ids:
        executions = by_run.get(run_id, [])
        for step in stack.durable.steps(run_id):
            runs_of_step = [row for row in executions if row["step"] == step.step_key]
            if step.kind in ("task", "inline"):
                assert step.status == "succeeded", (run_id, step)
                assert runs_of_step, f"{step.step_key} of {run_id} is journaled but never ran"
                late = [row for row in runs_of_step if row["at"] > step.finished_at]
                assert not late, f"I1 violated: {step.step_key} of {run_id} ran after its result was journaled"
            if len(runs_of_step) > 1:
                reruns[step.step_key] += len(runs_of_step) - 1
    return reruns
