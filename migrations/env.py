"""Alembic environment for the durable-tasks journal.

Runs only through :mod:`durable_tasks.store.migrate`, which hands over an open connection, the optional
schema name and our own version table (``durable_alembic_version``), so these revisions live beside a
user's own Alembic history without touching it.
"""

from __future__ import annotations

from alembic import context

from durable_tasks.store.schema import metadata

VERSION_TABLE = "durable_alembic_version"

config = context.config
connection = config.attributes["connection"]
schema = config.attributes.get("schema")

if schema:
    connection = connection.execution_options(schema_translate_map={None: schema})

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    version_table_schema=schema,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)

with context.begin_transaction():
    context.run_migrations()
