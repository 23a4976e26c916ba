"""A ``postgres://`` URL (what hosting providers hand out) reaches a real PostgreSQL through psycopg 3."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy

from durable_tasks.store import queries
from durable_tasks.store.database import Store
from tests.support.stack import POSTGRES_URL

pytestmark = pytest.mark.integration


def test_postgres_scheme_url_migrates_and_reads_through_psycopg3(services: None) -> None:
    schema = f"dt_url_{uuid.uuid4().hex[:8]}"
    url = sqlalchemy.make_url(POSTGRES_URL).set(drivername="postgres").render_as_string(hide_password=False)
    assert url.startswith("postgres://")
    store = Store(url, schema=schema)
    try:
        store.upgrade()
        with store.read() as conn:
            assert conn.dialect.driver == "psycopg"
            assert conn.exec_driver_sql("SELECT current_setting('server_version_num')::int").scalar() > 0
            assert queries.list_runs(conn, limit=1) == []  # the tables, in the chosen schema
    finally:
        store.dispose()
        cleanup = sqlalchemy.create_engine(POSTGRES_URL)
        with cleanup.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        cleanup.dispose()
