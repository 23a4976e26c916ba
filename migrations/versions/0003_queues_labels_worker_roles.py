"""queue progress for the relay, run labels and forks, worker roles

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Only new nullable columns and an index: a run started before this upgrade goes on after it (its step and
outbox rows have no queue or publish time, and the relay treats them as before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("durable_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("forked_from", sa.String(length=36), nullable=True))
    with op.batch_alter_table("durable_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("published_at", sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f("ix_durable_steps_queue_published_at"), ["queue", "published_at"],
                              unique=False)
    with op.batch_alter_table("durable_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("published_at", sa.Float(), nullable=True))
    with op.batch_alter_table("durable_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("stopped_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_interval", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("timeout", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("durable_workers", schema=None) as batch_op:
        for column in ("timeout", "heartbeat_interval", "stopped_at", "role"):
            batch_op.drop_column(column)
    with op.batch_alter_table("durable_outbox", schema=None) as batch_op:
        batch_op.drop_column("published_at")
        batch_op.drop_column("queue")
    with op.batch_alter_table("durable_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_durable_steps_queue_published_at"))
        batch_op.drop_column("published_at")
        batch_op.drop_column("queue")
    with op.batch_alter_table("durable_runs", schema=None) as batch_op:
        batch_op.drop_column("forked_from")
        batch_op.drop_column("label")
