"""A backlog on a real Redis broker is not taken for loss; a message lost inside it is sent again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from durable_tasks.store.schema import steps
from tests.support.stack import REDIS_URL, Stack

pytestmark = pytest.mark.integration


def test_a_backlog_longer_than_redelivery_after_is_not_resent_but_a_lost_message_is(
        services: None, tmp_path: Path) -> None:
    # Messages wait about 8 s in the queue, eight times redelivery_after: the old relay re-sent most of them.
    stack = Stack("postgresql", tmp_path, redelivery_after=1)
    try:
        t = stack.client.tasks
        handles = [stack.durable.chain(t["slow"].s(n, 0.05, "backlog")).start() for n in range(160)]
        doomed = handles[100]
        task_id = stack.step(doomed.id, "t.slow").celery_task_id
        broker = redis.Redis.from_url(REDIS_URL)
        queue = f"{stack.prefix}celery"
        message = next(raw for raw in broker.lrange(queue, 0, -1) if json.loads(raw)["headers"]["id"] == task_id)
        assert broker.lrem(queue, 1, message) == 1, "the broker loses one message in the middle of the backlog"

        stack.start_worker()
        assert [handle.result(timeout=60) for handle in handles] == list(range(160))
        with stack.durable.store.read() as conn:
            resent = dict(conn.execute(select(steps.c.run_id, steps.c.publish_count)
                                       .where(steps.c.publish_count > 0)).all())
            total = conn.execute(select(func.count()).select_from(steps)).scalar_one()
        assert total == 160
        assert resent == {doomed.id: 1}, "only the lost message was published again, once"
        assert stack.execution_counts(doomed.id)["t.slow"] == 1
        # ... within seconds of the queue reaching it, not at the end of the backlog.
        late = doomed.info().finished_at - handles[101].info().finished_at
        assert late < 10, f"the lost message was sent again {late:.1f}s after the queue passed it"
    finally:
        stack.close()
