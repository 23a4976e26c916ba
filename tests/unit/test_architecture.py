"""The shape of the core, checked on its source: one front door, one home per state transition."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "durable_tasks"

# The queries that change a run's or a step's state (status, result, error, attempts): only the
# transition module calls them, so every change has one call site where events and metrics hook in.
STATE_WRITES = {
    "insert_run", "update_run", "release_run", "insert_step", "update_step", "claim_step", "finish_step",
    "finish_step_locking_run",
    "delete_step", "copy_steps", "cancel_pending_steps", "insert_attempt", "fire_timer", "insert_timer",
    "cancel_timers", "mark_handed_off", "insert_wait", "delete_waits", "insert_signal", "consume_signal",
    "delete_expired_signals",
}
TRANSITION_MODULES = {"transitions.py", "event_transitions.py"}


def _modules() -> dict[str, ast.Module]:
    return {str(path.relative_to(PACKAGE)): ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}


def _imported_modules(tree: ast.Module, module: str) -> set[str]:
    package = ["durable_tasks", *module.removesuffix(".py").split("/")[:-1]]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def test_only_the_front_door_imports_the_facade() -> None:
    offenders = [module for module, tree in _modules().items()
                 if module not in ("app.py", "__init__.py") and "durable_tasks.app" in _imported_modules(tree, module)]
    assert offenders == [], "engine modules take a Runtime, never the Durable facade"


def test_only_transitions_change_run_and_step_state() -> None:
    calls: dict[str, set[str]] = {}
    for module, tree in _modules().items():
        if module.startswith("store/"):
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id.endswith("queries")
                    and node.func.attr in STATE_WRITES):
                calls.setdefault(module, set()).add(node.func.attr)
    assert set(calls) <= TRANSITION_MODULES, {module: sorted(names) for module, names in calls.items()
                                             if module not in TRANSITION_MODULES}


def test_the_scan_sees_the_transition_calls() -> None:
    # Guards the test above against passing because it found nothing.
    tree = _modules()["transitions.py"]
    names = {node.func.attr for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name) and node.func.value.id.endswith("queries")}
    assert {"insert_run", "update_step", "claim_step", "finish_step", "insert_attempt"} <= names


def test_no_bare_status_literals_outside_the_vocabulary() -> None:
    words = {"pending", "running", "sleeping", "waiting", "succeeded", "failed", "cancelled", "dispatched",
             "retrying", "lost", "resumed"}
    offenders = []
    for module, tree in _modules().items():
        if module in ("vocabulary.py", "cli_render.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    if isinstance(side, ast.Constant) and side.value in words:
                        offenders.append(f"{module}:{node.lineno} {side.value!r}")
    assert offenders == [], "compare with the StrEnums of durable_tasks.vocabulary"
