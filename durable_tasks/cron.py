"""Declaring durable schedules: what ``durable.cron(...)`` records, and the workflow a task schedule runs.

A declaration is checked in full when the module declaring it is imported (calendar, policies, name, the
arguments of each run), so a mistake fails at once with a :class:`~durable_tasks.errors.ConfigurationError`.
It is kept in this process's :class:`ScheduleBook`; a worker writes the book to the database when it starts
(:mod:`durable_tasks.schedule_sync`), and any worker fires the ticks (:mod:`durable_tasks.scheduler`).

A schedule of a Celery task runs the built-in one-step workflow :data:`TASK_WORKFLOW`. The task must be a
durable step in every worker; ``durable.cron(...)(task)`` makes it one, like ``@durable.step``, because the
declaration runs wherever its module is imported, workers included. Nothing becomes a step implicitly when
a run is started: a wrapper made there would not exist in the worker that runs the task.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from celery.canvas import Signature

from .errors import ConfigurationError
from .schedules import ScheduleSpec
from .serialization import dumps
from .workflow import WorkflowContext

TASK_WORKFLOW = "durable_tasks.task"
"""The built-in workflow behind a schedule of a Celery task: one task step, named after the task."""

#: The longest schedule name: its runs' idempotency keys (``cron:<name>:<tick>``) must fit in 255 characters.
MAX_NAME_LENGTH = 200

#: The ``apply_async`` options a task schedule passes to the task's message (as ``durable.chain`` does).
TASK_OPTIONS = frozenset({"queue", "routing_key", "exchange", "priority", "time_limit", "soft_time_limit"})


@dataclass(frozen=True)
class Declaration:
    """One schedule as a process declared it: its spec and what each of its ticks starts.

    ``workflow`` and ``input`` (encoded ``{"args": [...], "kwargs": {...}}``) are the run each tick starts;
    ``target`` names the workflow or task for people; ``module`` is the module whose code declared it.
    """

    spec: ScheduleSpec
    workflow: str
    input: str
    fingerprint: str
    target: str
    module: str | None

    @property
    def name(self) -> str:
        return self.spec.name


class ScheduleBook:
    """The schedules this process declared, by name. ``started_at`` is when the book (and its Durable) was made.

    A name declared twice is an error, except when the same module declares the same target again (a module
    imported twice, by autoreload or by tests): the newer declaration then wins.
    """

    def __init__(self) -> None:
        self.declared: dict[str, Declaration] = {}
        self.started_at = time.time()

    def add(self, declaration: Declaration) -> None:
        name = declaration.name
        existing = self.declared.get(name)
        if existing is not None and (existing.module, existing.target) != (declaration.module, declaration.target):
            raise ConfigurationError(
                f"Schedule {name!r} is declared twice: for {existing.target} in module {existing.module} and for "
                f"{declaration.target} in module {declaration.module}. Schedule names are unique (each tick's run is "
                f"keyed by the name); pass name='...' to one of them."
            )
        self.declared[name] = declaration

    def __iter__(self) -> Iterator[Declaration]:
        return iter(list(self.declared.values()))

    def __len__(self) -> int:
        return len(self.declared)


def declaration(spec: ScheduleSpec, *, workflow: str, fingerprint: str, target: str, args: Sequence[Any] | None,
                kwargs: Mapping[str, Any] | None, module: str | None, max_bytes: int) -> Declaration:
    """A checked :class:`Declaration` whose ticks start ``workflow`` with ``args``/``kwargs`` (JSON values).

    Raises :class:`~durable_tasks.errors.ConfigurationError`, or a ``PayloadError`` for arguments JSON cannot hold.
    """
    label = f"Schedule {spec.name!r}"
    if len(spec.name) > MAX_NAME_LENGTH:
        raise ConfigurationError(f"{label[:60]}...: the name has {len(spec.name)} characters; "
                                 f"use at most {MAX_NAME_LENGTH}.")
    if args is not None and not isinstance(args, list | tuple):
        raise ConfigurationError(f"{label}: args={args!r} must be a list of arguments, e.g. args=['eu'].")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ConfigurationError(f"{label}: kwargs={kwargs!r} must be a dict, e.g. kwargs={{'full': True}}.")
    call = {"args": list(args or ()), "kwargs": dict(kwargs or {})}
    # Encoded now, so arguments that are not JSON fail where they are declared (a PayloadError).
    text = dumps(call, what=f"arguments of schedule {spec.name!r}", max_bytes=max_bytes)
    return Declaration(spec, workflow, text, fingerprint, target, module)


def task_arguments(spec: ScheduleSpec, task: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
                   options: Mapping[str, Any] | None) -> list[Any]:
    """The input of :data:`TASK_WORKFLOW` for a schedule of ``task``; refuses options a durable run cannot keep."""
    extra = sorted(set(options or {}) - TASK_OPTIONS)
    if extra:
        raise ConfigurationError(
            f"Schedule {spec.name!r}: options {', '.join(map(repr, extra))} cannot be kept by a durable run; "
            f"use only {', '.join(sorted(TASK_OPTIONS))}."
        )
    return [task, list(args or ()), dict(kwargs or {}), dict(options or {})]


def task_declaration(spec: ScheduleSpec, task: str, *, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
                     options: Mapping[str, Any] | None, fingerprint: str, module: str | None,
                     max_bytes: int) -> Declaration:
    """A checked :class:`Declaration` of a schedule that runs Celery task ``task`` (through :data:`TASK_WORKFLOW`)."""
    return declaration(spec, workflow=TASK_WORKFLOW, fingerprint=fingerprint, target=f"task {task}",
                       args=task_arguments(spec, task, args, kwargs, options), kwargs=None, module=module,
                       max_bytes=max_bytes)


def run_task(ctx: WorkflowContext, task: str, args: list[Any], kwargs: dict[str, Any],
             options: dict[str, Any]) -> Any:
    """The built-in workflow :data:`TASK_WORKFLOW`: run ``task`` as one durable step and return its result."""
    return ctx.run(Signature(task, args, kwargs, options))


def app_scope(app: Any) -> str:
    """The name a Celery app's schedules are scoped by: ``app.main`` (``Celery("shop")`` is ``shop``)."""
    return str(app.main or "default")


def declaring_module(frame: FrameType | None) -> str | None:
    """The module whose code runs in ``frame`` (the caller of ``durable.cron``)."""
    return frame.f_globals.get("__name__") if frame is not None else None
