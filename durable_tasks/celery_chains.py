"""Durable chains by one setting: with ``durable_chains`` on, Celery's own chains of an app become durable runs.

::

    app.conf.durable_chains = True          # or Durable(app, chains=True)
    result = chain(charge_card.s(42), send_receipt.s()).delay()   # unchanged calling code: a durable run
    result.get(timeout=30)                   # a Celery AsyncResult over the run's journal

**The hook.** Every way of starting a chain ends in :meth:`celery.canvas._chain.apply_async`:
``chain(...).delay()``, ``.apply_async()``, ``chain(...)()`` and ``(a.s() | b.s()).delay()`` (``chain()`` folds its
signatures with ``|``, and ``|`` always builds ``celery.canvas._chain``; Celery has no per-app chain class to
subclass). :func:`install` wraps that one method, once per process. The wrapper asks the chain's own app
(Celery's ``chain.app``: the app of its first task) whether it has a ``Durable`` with the setting on, and calls
Celery's method unchanged otherwise. So other apps, ``task_always_eager``, and chains that are pieces of a
larger canvas (a group or chord member, a chord body, ``Task.replace(chain)``: Celery passes them group, chord
or task ids, or froze their tasks with ids someone waits for) keep Celery's behaviour, and one chain can opt out
with ``.apply_async(durable=False)`` or ``.set(durable=False)``.

A chain that becomes durable is a :class:`~durable_tasks.DurableChain` (the same encoding and rules), so a chain
with a task that is not a durable step is refused at once with a :class:`~durable_tasks.ConfigurationError`
naming it (the project rule in docs/cron.md, "Tasks that are not durable steps"). What it returns is a
:class:`DurableAsyncResult`: Celery's ``AsyncResult``, reading the run instead of a result backend.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import states
from celery.canvas import _chain
from celery.exceptions import SecurityError, TaskRevokedError
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, assert_will_not_block
from celery.utils.time import maybe_make_aware

from .canvas import PASSED_OPTIONS, ChainSleep
from .chain import DurableChain
from .errors import ConfigurationError, InvalidStateError, ResultTimeoutError, RunNotFoundError, WorkflowFailedError
from .handle import RunHandle, RunRecord, load_run
from .operations import Operations
from .runtime import Runtime
from .vocabulary import RunStatus

logger = logging.getLogger("durable_tasks.chains")

STARTER = "_durable_chain_starter"  # the app attribute that holds its ChainStarter
OPT_OUT = "durable"  # chain.apply_async(durable=False) / chain.set(durable=False): a plain Celery chain
# Options Celery's canvas passes to a chain that is a piece of a larger canvas, or that names its task id.
CANVAS_OPTIONS = ("group_id", "chord", "group_index", "root_id", "parent_id", "task_id", "replaced_task_nesting")
REFUSED = {"link": "add the callback as the next signature of the chain",
           "link_error": "failures park the run for `durable runs resume`; handle them with the steps' retry policy"}
ROUTING = PASSED_OPTIONS - {"step_key"}  # queue, priority, time limits...: Celery gives them to the first task

STATES = {RunStatus.PENDING: states.PENDING, RunStatus.RUNNING: states.STARTED, RunStatus.SLEEPING: states.STARTED,
          RunStatus.WAITING: states.STARTED, RunStatus.SUCCEEDED: states.SUCCESS, RunStatus.FAILED: states.FAILURE,
          RunStatus.CANCELLED: states.REVOKED}

_celery_apply_async = _chain.apply_async


class ChainResultTimeout(ResultTimeoutError, CeleryTimeoutError):
    """``DurableAsyncResult.get(timeout=...)`` ran out of time: both Celery's ``TimeoutError`` (what code around
    ``AsyncResult.get`` catches) and durable-tasks' :class:`~durable_tasks.ResultTimeoutError`."""


class ChainStarter:
    """Starts the chains of one app as durable runs when its setting is on (``app.conf.durable_chains`` is read
    at each start, so it may be set after ``Durable(app)``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def takes(self, chain: _chain, options: dict[str, Any]) -> bool:
        """Whether ``chain`` becomes a durable run (see the module docstring)."""
        app = self.runtime.app
        if not (self.runtime.settings.chains or app.conf.get("durable_chains")) or app.conf.task_always_eager:
            return False
        if not chain.tasks or any(options.get(name) is not None for name in CANVAS_OPTIONS):
            return False
        frozen = getattr(chain, "_frozen", None) is not None or any(
            (task.get("options") or {}).get("task_id") for task in chain.tasks)
        if frozen:
            logger.debug("Chain %r keeps Celery's behaviour: its tasks were frozen with ids.", chain)
        return not frozen

    def start(self, chain: _chain, args: Any, kwargs: Any, options: dict[str, Any]) -> DurableAsyncResult:
        """Start ``chain`` as a durable chain: ``countdown``/``eta`` become a durable sleep before it, routing
        options go to its first task (as Celery does), publishing options that concern one Celery message
        (``serializer``, ``headers``, ``expires``...) do not apply, ``link``/``link_error`` are refused."""
        for option, advice in REFUSED.items():
            if options.get(option):
                raise ConfigurationError(f"chain(...).apply_async({option}=...) cannot be kept by a durable chain: "
                                         f"{advice}; or start this chain as a plain Celery chain with durable=False.")
        items: list[Any] = [chain]
        delay = self._delay(options.get("countdown"), options.get("eta"))
        if delay > 0:
            items.insert(0, ChainSleep(delay))
        try:
            durable = DurableChain(self.runtime, tuple(items))
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{exc} With durable_chains on, every chain of app {self.runtime.app.main!r} runs as a durable "
                "chain; to keep this one a plain Celery chain, start it with .apply_async(durable=False) or "
                ".set(durable=False).") from None
        first = next((element for element in durable.elements if element["type"] != "sleep"), None)
        routing = {name: value for name, value in options.items() if name in ROUTING and value is not None}
        if routing and first is not None:
            for task in first.get("tasks", [first]):
                task["options"].update(routing)
        handle = durable.start(*(args or ()), **(kwargs or {}))
        return DurableAsyncResult(handle.id, app=self.runtime.app)

    def _delay(self, countdown: Any, eta: Any) -> float:
        if countdown:
            return float(countdown)
        if not eta:
            return 0.0
        moment = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
        return (maybe_make_aware(moment, self.runtime.app.timezone) - datetime.now(UTC)).total_seconds()


def install(runtime: Runtime) -> None:
    """Let ``runtime.app`` start its chains as durable runs when ``durable_chains`` is on (wraps
    ``_chain.apply_async`` once per process; other apps go straight to Celery's method)."""
    setattr(runtime.app, STARTER, ChainStarter(runtime))
    if _chain.apply_async is not _apply_async:
        _chain.apply_async = _apply_async  # type: ignore[method-assign]


def _apply_async(self: _chain, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
    """``_chain.apply_async``, or a durable run for the chains of an app with ``durable_chains`` on."""
    chain = self
    wanted = options.pop(OPT_OUT, chain.options.get(OPT_OUT))
    if OPT_OUT in chain.options:  # .set(durable=False): not an option Celery's messages should carry
        chain = chain.clone()
        chain.options.pop(OPT_OUT)
    starter = getattr(chain.app, STARTER, None)
    merged = {**chain.options, **options}
    if wanted is not False and isinstance(starter, ChainStarter) and starter.takes(chain, merged):
        return starter.start(chain, args, kwargs, merged)
    return _celery_apply_async(chain, args, kwargs, **options)


class DurableAsyncResult(AsyncResult):  # type: ignore[misc]
    """What a chain started the Celery way returns when it became a durable run: Celery's ``AsyncResult``, read
    from the journal instead of a result backend. Its ``id`` is the run id.

    ``state`` is ``PENDING`` until the first advance, ``STARTED`` while the run goes on (steps, sleeps, waits),
    then ``SUCCESS``, ``FAILURE`` or ``REVOKED`` (cancelled). ``get()`` returns the chain's result, or raises the
    failed step's exception as Celery would (its type rebuilt by Celery's own rules), ``TaskRevokedError`` for a
    cancelled run, or :class:`ChainResultTimeout`. ``revoke(terminate=...)`` cancels the run; ``handle`` is the
    :class:`~durable_tasks.RunHandle` (steps, children, cancel). To look a run up later by its id::

        DurableAsyncResult(run_id, app=app).state
    """

    _cache: dict[str, Any] | None  # Celery's: the meta of a finished run, read once

    def __init__(self, id: str, backend: Any = None, task_name: str | None = None, app: Any = None,
                 parent: Any = None) -> None:
        super().__init__(id, backend=backend, task_name=task_name, app=app, parent=parent)
        starter = getattr(self.app, STARTER, None)
        if not isinstance(starter, ChainStarter):
            raise ConfigurationError(f"Celery app {self.app.main!r} has no Durable instance, so run {id} cannot be "
                                     "read: create durable = Durable(app) in a module the app imports.")
        self._runtime = starter.runtime

    @property
    def handle(self) -> RunHandle:
        """The run's :class:`~durable_tasks.RunHandle`: ``steps()``, ``children()``, ``cancel()``."""
        return RunHandle(self._runtime.store, self.id, Operations(self._runtime.store, self._runtime.unit_of_work))

    def _get_task_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = _meta(load_run(self._runtime.store, self.id), self.backend)
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5,
            no_ack: bool = True, follow_parents: bool = True, callback: Any = None, on_message: Any = None,
            on_interval: Any = None, disable_sync_subtasks: bool = True, **_: Any) -> Any:
        """Wait for the run and return its result (``AsyncResult.get``); polls the journal, briefly at first."""
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while True:
            meta = self._get_task_meta()
            if meta["status"] in states.READY_STATES:
                if callback is not None:
                    callback(self.id, meta["result"])
                if propagate and meta["status"] in states.PROPAGATE_STATES:
                    raise meta["result"]
                return meta["result"]
            if on_interval is not None:
                on_interval()
            if deadline is not None and time.monotonic() >= deadline:
                raise ChainResultTimeout(f"The operation timed out: run {self.id} is still {meta['durable_status']} "
                                         f"after {timeout}s; `durable runs show {self.id}` lists its steps.")
            time.sleep(pause)
            pause = min(pause * 1.5, interval, 0.1)

    wait = get

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None, wait: bool = False,
               timeout: float | None = None) -> None:
        """Cancel the run (``terminate=True`` also stops its running steps); a finished run is left as it is."""
        with contextlib.suppress(InvalidStateError):  # like revoking a task that already finished
            self.handle.cancel("revoked", terminate=terminate)

    def forget(self) -> None:
        """Drop the cached state; the journal keeps the run until retention prunes it."""
        self._cache = None

    def exists(self) -> bool:
        try:
            load_run(self._runtime.store, self.id)
        except RunNotFoundError:
            return False
        return True


def _meta(run: RunRecord, backend: Any) -> dict[str, Any]:
    """The run as Celery's result meta (``status``, ``result``, ``traceback``, ``date_done``, ...)."""
    status = STATES[RunStatus(run.status)]
    error = run.error or {}
    result: Any = None
    if status == states.SUCCESS:
        result = run.result
    elif status == states.FAILURE:
        result = _exception(run, backend)
    elif status == states.REVOKED:
        result = TaskRevokedError(str(error.get("message") or "cancelled"))
    done = datetime.fromtimestamp(run.finished_at, UTC) if run.finished_at else None
    return {"task_id": run.id, "status": status, "durable_status": run.status, "result": result,
            "traceback": error.get("traceback"), "children": None, "name": run.name, "args": run.args,
            "kwargs": run.kwargs, "date_done": done}


def _exception(run: RunRecord, backend: Any) -> BaseException:
    """The failed run's error as the exception Celery would raise: the step's exception type when this process
    has it (Celery's ``exception_to_python``: classes of loaded modules only), else a stand-in of that name."""
    error = run.error or {}
    module, _, name = str(error.get("type") or "Exception").rpartition(".")
    message = str(error.get("message") or "")
    try:
        exc: BaseException = backend.exception_to_python(
            {"exc_type": name, "exc_module": module or None, "exc_message": [message]})
    except (SecurityError, ValueError, TypeError):
        exc = WorkflowFailedError(f"Run {run.id} ({run.name}) failed: {error.get('type')}: {message}",
                                  run_id=run.id, error=error)
    return exc
