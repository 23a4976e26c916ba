"""Benchmarks of durable-tasks against plain Celery chains and DBOS (see ``benchmarks/README.md``)."""
