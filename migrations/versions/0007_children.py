"""child runs: the parent run and the position of its child step, on each child run

Revision ID: 0007_children
Revises: 0006_timer_handoff
Create Date: 2026-12-09

Runs started before this revision have no parent (both columns stay NULL), so they go on unchanged. The
index holds only child runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_children"
down_revision = "0006_timer_handoff"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("durable_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("parent_position", sa.Integer(), nullable=True))
        batch_op.create_index("ix_durable_runs_parent_id", ["parent_id"], unique=False,
                              postgresql_where=sa.text("parent_id IS NOT NULL"),
                              sqlite_where=sa.text("parent_id IS NOT NULL"))


def downgrade() -> None:
    with op.batch_alter_table("durable_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_durable_runs_parent_id")
        batch_op.drop_column("parent_position")
        batch_op.drop_column("parent_id")
