"""The journal tables, as SQLAlchemy Core tables on the library's own ``MetaData``.

Times are stored as UNIX epoch seconds (float): cheap to compare on every engine, and the library does
all time arithmetic itself. Statuses and kinds are the words of :mod:`durable_tasks.vocabulary`. The
Alembic revisions in ``durable_tasks.migrations`` create exactly these tables; a test compares the two
(``tests/unit/test_store_and_config.py``).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

runs = Table(
    "durable_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("workflow", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", Text, nullable=False),
    Column("result", Text),
    Column("error", Text),
    Column("idempotency_key", String(255), unique=True),
    Column("fingerprint", String(64), nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", Float),
    Column("wake_seq", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    # What operators see instead of the registry name (a chain's tasks, or its name=).
    Column("label", String(255)),
    Column("forked_from", String(36)),
    # Set on runs a schedule started: its name and the tick's nominal instant (``ctx.tick``, ``durable cron``).
    Column("schedule", String(255)),
    Column("scheduled_for", Float),
    # Set on a child run (``ctx.start_child``): the parent run and the position of its ``child`` step.
    Column("parent_id", String(36)),
    Column("parent_position", Integer),
    Index(None, "status", "updated_at"),
    Index(None, "schedule", "status"),
    # Only child runs: a parent's children are found (cancel, ``runs show``) without indexing every run.
    Index("ix_durable_runs_parent_id", "parent_id", postgresql_where=text("parent_id IS NOT NULL"),
          sqlite_where=text("parent_id IS NOT NULL")),
)

steps = Table(
    "durable_steps",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("step_key", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("request", Text),
    Column("result", Text),
    Column("error", Text),
    Column("celery_task_id", String(64)),
    Column("worker", String(128)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    # A dispatched step is its own outbox row: its message is sent again after publish_after.
    Column("publish_after", Float),
    Column("publish_count", Integer, nullable=False, server_default="0"),
    # Where and when its message last went: the relay tells a queued message from a lost one by them.
    Column("queue", String(255)),
    Column("published_at", Float),
    ForeignKeyConstraint(["run_id"], ["durable_runs.id"], ondelete="CASCADE"),
    Index(None, "status", "worker"),
    Index(None, "status", "publish_after"),
    Index(None, "queue", "published_at"),
)

attempts = Table(
    "durable_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    Column("position", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_type", String(255)),
    Column("error_message", Text),
    Column("traceback", Text),
    Column("worker", String(128)),
    Column("started_at", Float),
    Column("duration", Float),
    ForeignKeyConstraint(["run_id"], ["durable_runs.id"], ondelete="CASCADE"),
    Index(None, "run_id", "position"),
)

outbox = Table(
    "durable_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("publish_after", Float, nullable=False),
    Column("publish_count", Integer, nullable=False, server_default="0"),
    Column("queue", String(255)),
    Column("published_at", Float),
    Index(None, "publish_after"),
    Index(None, "run_id"),
)

timers = Table(
    "durable_timers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    Column("position", Integer, nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("due_at", Float, nullable=False),
    Column("fired_at", Float),
    # When a transport (Kafka delay topics) took it over; the database still fires it if the transport fails.
    Column("handed_off_at", Float),
    ForeignKeyConstraint(["run_id"], ["durable_runs.id"], ondelete="CASCADE"),
    Index(None, "fired_at", "due_at"),
    Index(None, "run_id"),
    # Only pending timers, in due order: the poll reads the due ones and stops, however many timers wait
    # in the future and however long a backlog of due ones is (a batch reads its 200 rows, not the backlog).
    Index("ix_durable_timers_pending_due_at", "due_at", postgresql_where=text("fired_at IS NULL"),
          sqlite_where=text("fired_at IS NULL")),
    # Pending timers no transport has taken yet, in due order: the hand-off poll reads only those coming near.
    Index("ix_durable_timers_unsent_due_at", "due_at",
          postgresql_where=text("fired_at IS NULL AND handed_off_at IS NULL"),
          sqlite_where=text("fired_at IS NULL AND handed_off_at IS NULL")),
)

# An outside event. ``run_id`` is the run it was sent to, or, once a wait consumed it, that run (so pruning
# a run deletes its events); ``correlation_key`` is the key it was sent to. ``event_id`` makes a second
# send of the same event a no-op. An event nobody consumed is kept until ``expires_at``.
signals = Table(
    "durable_signals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(255), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("run_id", String(36)),
    Column("correlation_key", String(255)),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("consumed_at", Float),
    Column("consumed_position", Integer),
    ForeignKeyConstraint(["run_id"], ["durable_runs.id"], ondelete="CASCADE"),
    Index(None, "run_id", "name"),
    Index(None, "correlation_key", "name"),
    Index(None, "expires_at"),
)

# One row per event wait that has no event yet (its step is ``waiting``): how a sender finds the run that
# waits for an event name on a run, or on a correlation key, without scanning steps.
waits = Table(
    "durable_waits",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False),
    Column("correlation_key", String(255)),
    Column("created_at", Float, nullable=False),
    ForeignKeyConstraint(["run_id"], ["durable_runs.id"], ondelete="CASCADE"),
    Index(None, "correlation_key", "name"),
)

workers = Table(
    "durable_workers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("role", String(16)),  # worker, pool (a prefork child) or client
    Column("stopped_at", Float),  # a clean shutdown
    Column("heartbeat_interval", Float),
    Column("timeout", Float),  # its worker_timeout: older heartbeats mean dead
    Index(None, "heartbeat_at"),
)

schedules = Table(
    "durable_schedules",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("app", String(255), nullable=False),  # the Celery app (app.main) whose code declared it
    Column("source", String(16), nullable=False),  # code (synced by workers) or import (durable cron import)
    Column("module", String(255)),  # the module that declared it in code
    # What each tick starts: a run of this workflow with this input (a task schedule: durable_tasks.task).
    Column("workflow", String(255), nullable=False),
    Column("input", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    # The spec (durable_tasks.schedules.ScheduleSpec), and the hash of its calendar.
    Column("cron", String(255)),
    Column("every", Float),
    Column("tz", String(64), nullable=False),
    Column("overlap", String(16), nullable=False),
    Column("buffer_limit", Integer, nullable=False),
    Column("catch_up", String(16), nullable=False),
    Column("catch_up_window", Float, nullable=False),
    Column("jitter", Float, nullable=False),
    Column("start_at", Float),
    Column("end_at", Float),
    Column("paused_in_code", Boolean, nullable=False),
    Column("definition_hash", String(64), nullable=False),
    # Start time of the process whose code last declared (or removed) it: older processes leave it alone.
    Column("declared_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("removed_at", Float),
    # Where it stands: paused (by code or an operator), the newest tick dealt with, when to look again
    # (NULL once ended or removed), ticks waiting for the active run (buffer_one/buffer_all, bounded).
    Column("paused", Boolean, nullable=False),
    Column("last_fired", Float),
    Column("next_fire_at", Float),
    Column("buffered", Text),
    Column("last_run_id", String(36)),
    Column("missed", Integer, nullable=False, server_default="0"),
    Column("skipped", Integer, nullable=False, server_default="0"),
    Index(None, "next_fire_at"),
    Index(None, "app"),
)
