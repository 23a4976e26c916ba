"""Alembic migrations of the durable-tasks journal (applied by ``durable db upgrade``)."""
