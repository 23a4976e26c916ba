"""Shared fixtures: the real services are checked once; integration tests share one stack per store."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.stack import Stack

if TYPE_CHECKING:
    from tests.support.kafka import TansuBroker

SERVICES = {"PostgreSQL": ("127.0.0.1", 5432), "Redis": ("127.0.0.1", 6379)}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services() -> None:
    """Integration tests need PostgreSQL and Redis; a missing service is a failure, never a skip."""
    missing = [name for name, address in SERVICES.items() if not _reachable(*address)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not reachable; start them as .ci/run does")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One Tansu broker (a real Kafka-protocol broker, memory only) on a free port for the whole session.

    Only started when a test asks for it. Tests that restart it (:meth:`TansuBroker.restart`) leave an empty
    broker on the same port, so every test creates its own topics under its own prefix.
    """
    from tests.support.kafka import TansuBroker

    broker = TansuBroker(tmp_path_factory.mktemp("kafka") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, services: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One store, broker prefix and solo worker per store kind, shared by the integration tests."""
    shared = Stack(request.param, tmp_path_factory.mktemp(f"stack-{request.param}"))
    shared.start_worker()
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def private_stack(services: None, tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own (PostgreSQL) with no worker yet, for tests that kill or restart workers."""
    kind = os.environ.get("DT_CRASH_STORE", "postgresql")
    own = Stack(kind, tmp_path)
    try:
        yield own
    finally:
        own.close()
