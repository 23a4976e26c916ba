"""Applying and checking the Alembic migrations of the journal."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from ..errors import SchemaError
from .engine import redact, upgrade_command

VERSION_TABLE = "durable_alembic_version"


def alembic_config(engine: Engine, schema: str | None = None) -> Config:
    """An Alembic ``Config`` for our revisions, bound to ``engine`` (no ini file needed)."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("durable_tasks.migrations")))
    config.attributes["engine"] = engine
    config.attributes["schema"] = schema
    return config


def head_revision(engine: Engine) -> str | None:
    """The newest revision this version of the library ships."""
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine, schema: str | None = None) -> str | None:
    """The revision the database is at, or None when our tables were never created."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
        )
        return context.get_current_revision()


def upgrade(engine: Engine, schema: str | None = None, revision: str = "head") -> None:
    """Bring the journal tables to ``revision`` (default: the newest). Safe to run again."""
    config = alembic_config(engine, schema)
    with engine.begin() as conn:
        if schema:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            # Some Alembic operations (ADD COLUMN) ignore schema_translate_map: resolve names in the schema.
            conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def check(engine: Engine, schema: str | None = None) -> None:
    """Raise :class:`SchemaError` unless the database is at the library's head revision."""
    current = current_revision(engine, schema)
    head = head_revision(engine)
    if current == head:
        return
    where = redact(engine.url.render_as_string(hide_password=False))
    command = upgrade_command(engine.url, schema)
    if current is None:
        raise SchemaError(
            f"The durable store at {where} has no durable-tasks tables. Create them with: {command}"
        )
    raise SchemaError(
        f"The durable store at {where} is at migration {current}, but this version of durable-tasks "
        f"needs {head}. Apply the missing migrations with: {command}"
    )
