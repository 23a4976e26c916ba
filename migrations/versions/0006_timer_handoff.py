"""timers handed off to a transport (Kafka delay topics): when, and an index of those not handed off yet

Revision ID: 0006_timer_handoff
Revises: 0005_schedules
Create Date: 2026-11-26

A nullable column and a partial index: timers written before this upgrade have no hand-off time, so a Kafka
backend hands them off when they come near (or the database fires them, as before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_timer_handoff"
down_revision = "0005_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("durable_timers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handed_off_at", sa.Float(), nullable=True))
        batch_op.create_index("ix_durable_timers_unsent_due_at", ["due_at"], unique=False,
                              postgresql_where=sa.text("fired_at IS NULL AND handed_off_at IS NULL"),
                              sqlite_where=sa.text("fired_at IS NULL AND handed_off_at IS NULL"))


def downgrade() -> None:
    with op.batch_alter_table("durable_timers", schema=None) as batch_op:
        batch_op.drop_index("ix_durable_timers_unsent_due_at")
        batch_op.drop_column("handed_off_at")
