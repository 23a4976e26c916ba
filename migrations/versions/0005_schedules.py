"""durable schedules (cron): the schedules table, and the schedule and tick of the runs they start

Revision ID: 0005_schedules
Revises: 0004_events
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_schedules"
down_revision = "0004_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("durable_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schedule", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("scheduled_for", sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f("ix_durable_runs_schedule_status"), ["schedule", "status"], unique=False)
    op.create_table(
        "durable_schedules",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("app", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("module", sa.String(length=255), nullable=True),
        sa.Column("workflow", sa.String(length=255), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("cron", sa.String(length=255), nullable=True),
        sa.Column("every", sa.Float(), nullable=True),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("overlap", sa.String(length=16), nullable=False),
        sa.Column("buffer_limit", sa.Integer(), nullable=False),
        sa.Column("catch_up", sa.String(length=16), nullable=False),
        sa.Column("catch_up_window", sa.Float(), nullable=False),
        sa.Column("jitter", sa.Float(), nullable=False),
        sa.Column("start_at", sa.Float(), nullable=True),
        sa.Column("end_at", sa.Float(), nullable=True),
        sa.Column("paused_in_code", sa.Boolean(), nullable=False),
        sa.Column("definition_hash", sa.String(length=64), nullable=False),
        sa.Column("declared_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("removed_at", sa.Float(), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("last_fired", sa.Float(), nullable=True),
        sa.Column("next_fire_at", sa.Float(), nullable=True),
        sa.Column("buffered", sa.Text(), nullable=True),
        sa.Column("last_run_id", sa.String(length=36), nullable=True),
        sa.Column("missed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("skipped", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_durable_schedules")),
    )
    with op.batch_alter_table("durable_schedules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_durable_schedules_next_fire_at"), ["next_fire_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_durable_schedules_app"), ["app"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("durable_schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_durable_schedules_app"))
        batch_op.drop_index(batch_op.f("ix_durable_schedules_next_fire_at"))
    op.drop_table("durable_schedules")
    with op.batch_alter_table("durable_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_durable_runs_schedule_status"))
        batch_op.drop_column("scheduled_for")
        batch_op.drop_column("schedule")
