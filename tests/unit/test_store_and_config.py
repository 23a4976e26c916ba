"""The schema, its migrations, store errors and configuration, on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from celery import Celery

from durable_tasks import ConfigurationError, Durable, SchemaError, StoreUnavailableError
from durable_tasks.config import resolve_settings
from durable_tasks.store import migrate
from durable_tasks.store.database import Store
from durable_tasks.store.engine import make_engine
from durable_tasks.store.schema import metadata


def test_migrations_create_exactly_the_declared_tables(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'j.sqlite3'}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
    migrate.upgrade(engine)  # running it again is harmless


def test_missing_tables_give_the_command_to_run(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'empty.sqlite3'}", auto_migrate=False)
    with pytest.raises(SchemaError, match="durable db upgrade --store"):
        store.ensure_ready()


def test_unreachable_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = Store(f"sqlite:///{blocker}/journal.sqlite3", auto_migrate=True)
    with pytest.raises((StoreUnavailableError, OSError)):
        store.ensure_ready()


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://root@localhost/x", "supports sqlite"), ("not a url", "not a database URL"),
])
def test_unsupported_store_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_engine(url)


def test_settings_come_from_arguments_then_app_conf_then_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    app = Celery("cfg", broker="memory://", set_as_current=False)
    app.conf.durable_worker_timeout = "45s"
    app.conf.durable_store = f"sqlite:///{tmp_path / 'from-conf.sqlite3'}"
    settings = resolve_settings(app.conf, {"redelivery_after": "2m"})
    assert settings.worker_timeout == 45 and settings.redelivery_after == 120
    assert settings.store.endswith("from-conf.sqlite3") and settings.migrate_automatically
    assert resolve_settings(None, {}).store == "sqlite:///durable.sqlite3"


def test_unknown_options_and_impossible_timeouts_are_refused() -> None:
    app = Celery("cfg2", broker="memory://", set_as_current=False)
    with pytest.raises(ConfigurationError, match="Unknown Durable option"):
        Durable(app, store="sqlite://", visibility=3)
    with pytest.raises(ConfigurationError, match="worker_timeout"):
        resolve_settings(None, {"worker_timeout": 1, "heartbeat_interval": 2})


def test_one_durable_per_app(app: Celery, durable: Durable) -> None:
    with pytest.raises(ConfigurationError, match="already has a Durable"):
        Durable(app)
