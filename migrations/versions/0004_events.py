"""events: durable_signals keeps outside events (correlation key, event id, expiry, consumer); durable_waits;
a partial index of pending timers in due order

Revision ID: 0004_events
Revises: 0003
Create Date: 2026-11-26

Runs started before this revision never waited for events (no code wrote ``durable_signals``), so they go
on unchanged. Rows already in ``durable_signals`` get an event id (``legacy-<id>``) and the default
retention of seven days from when they were written.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_events"
down_revision = "0003"
branch_labels = None
depends_on = None

LEGACY_RETENTION = 7 * 86400.0


def upgrade() -> None:
    with op.batch_alter_table("durable_signals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("event_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("correlation_key", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("consumed_position", sa.Integer(), nullable=True))
        batch_op.alter_column("run_id", existing_type=sa.String(length=36), nullable=True)
    op.execute(
        sa.text("UPDATE durable_signals SET event_id = 'legacy-' || CAST(id AS VARCHAR(20)), "
                "expires_at = created_at + :retention").bindparams(retention=LEGACY_RETENTION)
    )
    with op.batch_alter_table("durable_signals", schema=None) as batch_op:
        batch_op.alter_column("event_id", existing_type=sa.String(length=255), nullable=False)
        batch_op.alter_column("expires_at", existing_type=sa.Float(), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_durable_signals_event_id"), ["event_id"])
        batch_op.create_index(batch_op.f("ix_durable_signals_correlation_key_name"), ["correlation_key", "name"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_durable_signals_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "durable_waits",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("correlation_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["durable_runs.id"], name=op.f("fk_durable_waits_run_id_durable_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "position", name=op.f("pk_durable_waits")),
    )
    with op.batch_alter_table("durable_waits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_durable_waits_correlation_key_name"), ["correlation_key", "name"],
                              unique=False)

    with op.batch_alter_table("durable_timers", schema=None) as batch_op:
        batch_op.create_index("ix_durable_timers_pending_due_at", ["due_at"], unique=False,
                              postgresql_where=sa.text("fired_at IS NULL"), sqlite_where=sa.text("fired_at IS NULL"))


def downgrade() -> None:
    with op.batch_alter_table("durable_timers", schema=None) as batch_op:
        batch_op.drop_index("ix_durable_timers_pending_due_at")
    with op.batch_alter_table("durable_waits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_durable_waits_correlation_key_name"))
    op.drop_table("durable_waits")
    # Events sent to a correlation key that no run consumed have no run: the old table cannot hold them.
    op.execute("DELETE FROM durable_signals WHERE run_id IS NULL")
    with op.batch_alter_table("durable_signals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_durable_signals_expires_at"))
        batch_op.drop_index(batch_op.f("ix_durable_signals_correlation_key_name"))
        batch_op.drop_constraint(batch_op.f("uq_durable_signals_event_id"), type_="unique")
        batch_op.alter_column("run_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.drop_column("consumed_position")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("correlation_key")
        batch_op.drop_column("event_id")
