"""Migrations on PostgreSQL, in a schema of their own, applied one revision at a time."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from durable_tasks.store import migrate
from durable_tasks.store.engine import make_engine
from durable_tasks.store.schema import metadata
from tests.support.stack import POSTGRES_URL

pytestmark = pytest.mark.integration


def test_revisions_one_by_one_build_the_declared_schema_inside_the_chosen_schema(services: None) -> None:
    schema = f"dt_mig_{uuid.uuid4().hex[:8]}"
    engine = make_engine(POSTGRES_URL, schema=schema)
    try:
        migrate.upgrade(engine, schema, revision="0001")
        assert migrate.current_revision(engine, schema) == "0001"
        migrate.upgrade(engine, schema)
        assert migrate.current_revision(engine, schema) == migrate.head_revision(engine)
        with engine.connect() as conn:
            conn.exec_driver_sql(f'SET search_path TO "{schema}"')
            context = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
            assert compare_metadata(context, metadata) == []
            columns = {row[0] for row in conn.exec_driver_sql(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'durable_steps'", (schema,))}
        assert {"publish_after", "publish_count"} <= columns
    finally:
        engine.dispose()
        cleanup = sqlalchemy.create_engine(POSTGRES_URL)
        with cleanup.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        cleanup.dispose()
