"""Which tasks a worker terminates: its running durable steps that are journaled ``cancelled``, each once."""

from __future__ import annotations

import time
from typing import Any

from celery.concurrency.solo import TaskPool as SoloPool
from celery.concurrency.thread import TaskPool as ThreadPool
from celery.worker import state as worker_state

from durable_tasks import Durable
from durable_tasks.messages import HEADER
from durable_tasks.store import queries
from durable_tasks.termination import Terminator, can_terminate
from tests.support.publisher import KeptMessages


class RunningRequest:
    """What the worker keeps for a task it runs (``celery.worker.request.Request``): an id and the headers."""

    def __init__(self, task_id: str, header: dict[str, Any] | None) -> None:
        self.id = task_id
        self.request_dict = {HEADER: header} if header else {}


class Revokes:
    """Stands in for ``app.control``: records the revokes a worker sends to itself."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[str], dict[str, Any]]] = []

    def revoke(self, task_ids: list[str], **options: Any) -> None:
        self.sent.append((task_ids, options))


def test_only_pools_that_can_terminate_a_task_are_asked_to() -> None:
    class Prefork:  # prefork sets terminate_job on the pool when it starts
        def terminate_job(self, pid: int, signal: Any = None) -> None: ...

    assert can_terminate(Prefork())
    assert not can_terminate(SoloPool()) and not can_terminate(ThreadPool(limit=1)) and not can_terminate(None)


def test_a_worker_revokes_its_cancelled_steps_with_terminate_once(
        app: Any, durable: Durable, tasks: dict[str, Any]) -> None:
    durable.runtime.publisher = KeptMessages()

    @durable.workflow(name="unit.two_at_once")
    def flow(ctx: Any) -> Any:
        return ctx.gather(ctx.run_async(tasks["add"], 1, 1), ctx.run_async(tasks["add"], 2, 2))

    handle = flow.run()
    first, second = durable.runtime.publisher.steps()  # type: ignore[attr-defined]
    with durable.store.begin() as conn:
        for message in (first, second):
            queries.claim_step(conn, handle.id, message.position, 1, "w:1:x", time.time())
    running = [RunningRequest(message.task_id, {"run": handle.id, "position": message.position})
               for message in (first, second)] + [RunningRequest("plain-task", None)]
    for request in running:
        worker_state.active_requests.add(request)
    revokes = Revokes()
    app.control = revokes
    terminator = Terminator(durable.runtime, "w1@host")
    try:
        assert terminator.check() == 0, "nothing is cancelled yet"
        durable.cancel(handle.id, terminate=True)
        assert terminator.check() == 2 and terminator.check() == 0, "each task is revoked once"
        ((task_ids, options),) = revokes.sent
        assert sorted(task_ids) == sorted([first.task_id, second.task_id])
        assert options == {"terminate": True, "signal": "SIGTERM", "destination": ["w1@host"]}
    finally:
        for request in running:
            worker_state.active_requests.discard(request)
