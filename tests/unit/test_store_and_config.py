"""The schema, its migrations, store errors and configuration, on SQLite."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from celery import Celery
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from durable_tasks import ConfigurationError, Durable, SchemaError, StoreUnavailableError
from durable_tasks.cli import main
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
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    store = Store(f"sqlite:///{empty}", auto_migrate=False)
    with pytest.raises(SchemaError, match=r"has no durable-tasks tables\. Create them with: durable db upgrade"):
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


# --- store URLs ----------------------------------------------------------------------------------------------


def test_psycopg2_url_is_answered_with_the_psycopg3_url_and_no_password() -> None:
    with pytest.raises(ConfigurationError) as error:
        make_engine("postgresql+psycopg2://shop:s3cret@db.example.com:5432/orders")
    message = str(error.value)
    assert "asks for the PostgreSQL driver 'psycopg2'" in message
    assert "durable-tasks talks to PostgreSQL through psycopg 3" in message
    assert "Write it as 'postgresql+psycopg://shop:***@db.example.com:5432/orders'" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("url", ["postgres://shop:s3cret@db.example.com/orders",
                                 "postgresql://shop:s3cret@db.example.com/orders"])
def test_postgres_urls_of_hosting_providers_use_psycopg3(url: str) -> None:
    engine = make_engine(url)  # connects lazily: nothing is reached here
    assert engine.url.drivername == "postgresql+psycopg" and engine.dialect.driver == "psycopg"
    assert engine.url.password == "s3cret" and engine.url.database == "orders"
    engine.dispose()


# --- reading never creates a store ---------------------------------------------------------------------------


def test_reading_a_store_in_a_missing_folder_names_the_folder_and_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'journal.sqlite3'}"
    with pytest.raises(SchemaError) as error, Store(url).read():
        pass
    assert str(error.value) == (
        f"The durable store {url} does not exist (no folder {tmp_path / 'data'}); reading never creates it. "
        f"Create it with: durable db upgrade --store {url}"
    )
    assert list(tmp_path.iterdir()) == []


def test_reading_a_missing_relative_store_names_the_resolved_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SchemaError, match=re.escape(f"does not exist (no file {tmp_path / 'journal.sqlite3'})")):
        Store("sqlite:///journal.sqlite3").ensure_ready()
    assert list(tmp_path.iterdir()) == []


def test_a_reader_never_creates_the_file_even_if_it_vanishes_after_the_check(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    Store(f"sqlite:///{path}").upgrade()
    engine = make_engine(f"sqlite:///{path}", create=False)
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    with pytest.raises(OperationalError, match="unable to open database file"), engine.connect():
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["runs", "list"], ["runs", "show", "r1"], ["workers"], ["db", "check"]])
def test_read_only_cli_commands_leave_no_file_behind(tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'journal.sqlite3'}"
    result = CliRunner().invoke(main, ["--store", url, *command])
    assert result.exit_code == 1
    assert "does not exist" in result.output and "reading never creates it" in result.output
    assert list(tmp_path.iterdir()) == []


def test_writers_create_the_folder_and_the_file(tmp_path: Path) -> None:
    migrated = Store(f"sqlite:///{tmp_path / 'a' / 'auto.sqlite3'}", auto_migrate=True)
    migrated.ensure_ready()
    upgraded = Store(f"sqlite:///{tmp_path / 'b' / 'cli.sqlite3'}")
    upgraded.upgrade()  # what `durable db upgrade` runs
    upgraded.ensure_ready()
    assert (tmp_path / "a" / "auto.sqlite3").is_file() and (tmp_path / "b" / "cli.sqlite3").is_file()
    for store in (migrated, upgraded):
        store.dispose()


# --- SQLite durability ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "pragma"), [(None, 2), ("full", 2), ("normal", 1), ("NORMAL", 1)])
def test_sqlite_synchronous_is_what_the_setting_says(tmp_path: Path, level: str | None, pragma: int) -> None:
    options = {} if level is None else {"sqlite_synchronous": level}
    store = Store(f"sqlite:///{tmp_path / 'j.sqlite3'}", auto_migrate=True, **options)
    with store.begin() as first, store.read() as second:  # two pooled connections
        assert first.exec_driver_sql("PRAGMA synchronous").scalar() == pragma
        assert second.exec_driver_sql("PRAGMA synchronous").scalar() == pragma
    with store.read() as again:  # a connection back from the pool keeps it
        assert again.exec_driver_sql("PRAGMA synchronous").scalar() == pragma
    store.dispose()


def test_sqlite_synchronous_setting_comes_from_app_conf_and_is_validated() -> None:
    assert resolve_settings(None, {}).sqlite_synchronous == "full"
    app = Celery("cfg3", broker="memory://", set_as_current=False)
    app.conf.durable_sqlite_synchronous = "Normal"
    assert resolve_settings(app.conf, {}).sqlite_synchronous == "normal"
    with pytest.raises(ConfigurationError) as error:
        resolve_settings(None, {"sqlite_synchronous": "off"})
    assert str(error.value).startswith("sqlite_synchronous is 'off'; use 'full' (the default: a commit is on disk")
    with pytest.raises(ConfigurationError, match="sqlite_synchronous is 'off'"):
        make_engine("sqlite://", sqlite_synchronous="off")
