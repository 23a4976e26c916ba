"""dispatch messages are re-sent from step rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("durable_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("publish_after", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("publish_count", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_index(batch_op.f("ix_durable_steps_status_publish_after"), ["status", "publish_after"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("durable_steps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_durable_steps_status_publish_after"))
        batch_op.drop_column("publish_count")
        batch_op.drop_column("publish_after")
