"""initial journal tables

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('durable_outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('publish_after', sa.Float(), nullable=False),
    sa.Column('publish_count', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durable_outbox'))
    )
    with op.batch_alter_table('durable_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_durable_outbox_publish_after'), ['publish_after'], unique=False)
        batch_op.create_index(batch_op.f('ix_durable_outbox_run_id'), ['run_id'], unique=False)

    op.create_table('durable_runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('workflow', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('input', sa.Text(), nullable=False),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.Column('wake_seq', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durable_runs')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_durable_runs_idempotency_key'))
    )
    with op.batch_alter_table('durable_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_durable_runs_status_updated_at'), ['status', 'updated_at'], unique=False)

    op.create_table('durable_workers',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('heartbeat_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durable_workers'))
    )
    with op.batch_alter_table('durable_workers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_durable_workers_heartbeat_at'), ['heartbeat_at'], unique=False)

    op.create_table('durable_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_type', sa.String(length=255), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('duration', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['durable_runs.id'], name=op.f('fk_durable_attempts_run_id_durable_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durable_attempts'))
    )
    with op.batch_alter_table('durable_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_durable_attempts_run_id_position'), ['run_id', 'position'], unique=False)

    op.create_table('durable_signals',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('consumed_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['durable_runs.id'], name=op.f('fk_durable_signals_run_id_durable_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durable_signals'))
    )
    with op.batch_alter_table('durable_signals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_durable_signals_run_id_name'), ['run_id', 'name'], unique=False)

    op.create_table('durable_steps',
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('step_key', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), server_default='1', nullable=False),
    sa.Column('request', sa.Text(), nullable=True),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('celery_task_id', sa.String(length=64), nullable=True),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['durable_runs.id'], name=op.f('fk_durable_steps_run_id_durable_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'position', name=op.f('pk_durable_steps'))
    )
    with op.batch_alter_table('durable_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_durable_steps_status_worker'), ['status', 'worker'], unique=False)

    op.create_table('durable_timers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('due_at', sa.Float(), nullable=False),
    sa.Column('fired_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['durable_runs.id'], name=op.f('fk_durable_timers_run_id_durable_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_durable_timers'))
    )
    with op.batch_alter_table('durable_timers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_durable_timers_fired_at_due_at'), ['fired_at', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_durable_timers_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('durable_timers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_durable_timers_run_id'))
        batch_op.drop_index(batch_op.f('ix_durable_timers_fired_at_due_at'))

    op.drop_table('durable_timers')
    with op.batch_alter_table('durable_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_durable_steps_status_worker'))

    op.drop_table('durable_steps')
    with op.batch_alter_table('durable_signals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_durable_signals_run_id_name'))

    op.drop_table('durable_signals')
    with op.batch_alter_table('durable_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_durable_attempts_run_id_position'))

    op.drop_table('durable_attempts')
    with op.batch_alter_table('durable_workers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_durable_workers_heartbeat_at'))

    op.drop_table('durable_workers')
    with op.batch_alter_table('durable_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_durable_runs_status_updated_at'))

    op.drop_table('durable_runs')
    with op.batch_alter_table('durable_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_durable_outbox_run_id'))
        batch_op.drop_index(batch_op.f('ix_durable_outbox_publish_after'))

    op.drop_table('durable_outbox')
