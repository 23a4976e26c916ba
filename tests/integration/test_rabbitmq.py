"""The chain tests on RabbitMQ (a virtual host of the stack's own), with PostgreSQL and a real worker.

Not the whole suite twice: the chain tests of ``test_workflows`` run here unchanged, plus a run's own messages,
sent with publisher confirms. The kill and broker-loss tests take RabbitMQ as a parameter (``tests/crash``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration import test_workflows as on_redis
from tests.support.stack import RABBITMQ, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rabbit_stack(services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack("postgresql", tmp_path_factory.mktemp("stack-rabbitmq"), broker=RABBITMQ)
    try:
        stack.start_worker()
        yield stack
    finally:
        stack.close()


CHAIN_TESTS: list[Callable[[Stack], None]] = [
    on_redis.test_workflow_with_task_inline_fanout_and_sleep,
    on_redis.test_durable_chain_keeps_celery_chain_semantics,
    on_redis.test_chain_matches_plain_celery_arguments,
    on_redis.test_signature_options_such_as_queue_are_kept,
    on_redis.test_group_inside_workflow_gathers_in_order,
    on_redis.test_duplicate_delivery_of_a_finished_step_does_not_run_the_body,
    on_redis.test_same_message_twice_while_running_executes_once,
]


@pytest.mark.parametrize("check", CHAIN_TESTS, ids=[check.__name__.removeprefix("test_") for check in CHAIN_TESTS])
def test_chains_on_rabbitmq(rabbit_stack: Stack, check: Callable[[Stack], None]) -> None:
    check(rabbit_stack)


def test_own_messages_on_rabbitmq_leave_once_confirmed(rabbit_stack: Stack) -> None:
    stack = rabbit_stack
    handle = stack.client.workflows["messages"].start("r")
    assert handle.result(timeout=20) == "r"
    stack.wait_until(lambda: len([row for row in stack.executions_of(None) if row["label"] == "receive"
                                  and row["id"].startswith(handle.id)]) == 2, 20, "both messages")
    stack.wait_until(lambda: not stack.outbox(handle.id), 10, "their rows to end")
