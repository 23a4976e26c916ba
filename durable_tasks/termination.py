"""Terminating cancelled steps: how ``durable runs cancel --terminate`` reaches the process running a step.

Cancelling a run with ``terminate`` journals its running task steps ``cancelled``
(:func:`~durable_tasks.transitions.cancel_run`). The database is the truth, so the cancel works from any
process, with or without a connection to the broker, and reaches workers that were busy or reconnecting when
it happened. Each worker's services thread then looks, only while the worker runs durable steps, which of them
are journaled ``cancelled`` (a primary-key read per pass), and revokes those with ``terminate`` through Celery's
remote control, addressed to the worker itself: Celery's own ``revoke --terminate`` path, run on the worker's
event loop, which signals the pool process that runs the task.

Only pools that can terminate a task do it (prefork; eventlet and gevent in Celery's sense). On other pools
(solo, threads) the step keeps running, and ``current_step().is_cancelled()`` tells it to stop.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.concurrency.base import BasePool
from celery.worker import state as worker_state

from .messages import HEADER
from .runtime import Runtime
from .store import queries

logger = logging.getLogger("durable_tasks.worker")

TERMINATE_SIGNAL = "SIGTERM"


def can_terminate(pool: Any) -> bool:
    """True when ``pool`` can terminate a running task (Celery's ``terminate_job``; prefork sets it on start)."""
    method = getattr(pool, "terminate_job", None)
    return method is not None and getattr(method, "__func__", method) is not BasePool.terminate_job


class Terminator:
    """Revokes, with terminate, the durable steps this worker runs whose step is journaled ``cancelled``.

    ``check()`` is a duty of the worker's services thread. ``hostname`` is the worker's node name, the only
    destination of its revokes.
    """

    def __init__(self, runtime: Runtime, hostname: str) -> None:
        self.runtime = runtime
        self.hostname = hostname
        self._revoked: set[str] = set()

    def check(self) -> int:
        """One pass; returns how many tasks it asked to terminate."""
        running = _running_steps()
        self._revoked &= set(running.values())  # forget tasks that ended
        if not running:
            return 0
        with self.runtime.store.read() as conn:
            cancelled = queries.cancelled_steps(conn, list(running))
        task_ids = sorted(running[address] for address in cancelled if running[address] not in self._revoked)
        if not task_ids:
            return 0
        self.runtime.app.control.revoke(task_ids, terminate=True, signal=TERMINATE_SIGNAL,
                                        destination=[self.hostname])
        self._revoked.update(task_ids)
        logger.info("Terminating %d cancelled durable step(s): tasks %s.", len(task_ids), ", ".join(task_ids))
        return len(task_ids)


def _running_steps() -> dict[tuple[str, int], str]:
    """``(run_id, position) -> task id`` of the durable step messages this worker process has started."""
    try:
        requests = tuple(worker_state.active_requests)
    except RuntimeError:  # the set changed while the consumer thread added a request: look again next pass
        return {}
    running: dict[tuple[str, int], str] = {}
    for request in requests:
        header = request.request_dict.get(HEADER)
        if isinstance(header, dict) and "run" in header and "position" in header:
            running[(header["run"], int(header["position"]))] = request.id
    return running
