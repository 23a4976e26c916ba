"""Unit fixtures: a Celery app on kombu's in-memory transport and a SQLite store in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from durable_tasks import Durable
from tests.support.publisher import KeptMessages


@pytest.fixture
def app() -> Celery:
    celery = Celery("unit", broker="memory://", set_as_current=False)
    celery.conf.task_ignore_result = True
    return celery


@pytest.fixture
def durable(app: Celery, tmp_path: Path) -> Iterator[Durable]:
    instance = Durable(app, store=f"sqlite:///{tmp_path / 'journal.sqlite3'}")
    yield instance
    instance.close()


@pytest.fixture
def tasks(app: Celery, durable: Durable) -> dict[str, Any]:
    @durable.step
    @app.task(name="u.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @durable.step
    @app.task(name="u.echo", shared=False)
    def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @app.task(name="u.plain", shared=False)
    def plain(x: int) -> int:
        return x

    return {"add": add, "echo": echo, "plain": plain}


@pytest.fixture
def broker(durable: Durable) -> KeptMessages:
    """The durable's messages, kept instead of sent: the test delivers them by hand (no worker, no broker)."""
    kept = KeptMessages()
    durable.runtime.publisher = kept
    return kept
