"""initial schema: sweeps and sweep_trials

Revision ID: 0001
Revises:
Create Date: 2026-11-25 06:34:54.145259
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sweeps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('state', sa.Enum('pending', 'running', 'paused', 'completed', 'cancelled', 'failed', name='sweep_state', native_enum=False, length=16), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('n_trials', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('dataset', sa.String(length=256), nullable=False),
    sa.Column('study_name', sa.String(length=256), nullable=True),
    sa.Column('mlflow_experiment_id', sa.String(length=64), nullable=True),
    sa.Column('mlflow_run_id', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_name')
    )
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sweeps_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweeps_state'), ['state'], unique=False)

    op.create_table('sweep_trials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sweep_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('slug', sa.String(length=256), nullable=True),
    sa.Column('state', sa.Enum('queued', 'running', 'completed', 'pruned', 'failed', 'cancelled', name='trial_state', native_enum=False, length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('optuna_trial_id', sa.Integer(), nullable=True),
    sa.Column('optuna_trial_number', sa.Integer(), nullable=True),
    sa.Column('mlflow_run_id', sa.String(length=64), nullable=True),
    sa.Column('worker_id', sa.String(length=256), nullable=True),
    sa.Column('device', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('epochs_done', sa.Integer(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['sweep_id'], ['sweeps.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sweep_id', 'number', name='uq_sweep_trials_sweep_number')
    )
    with op.batch_alter_table('sweep_trials', schema=None) as batch_op:
        batch_op.create_index('ix_sweep_trials_queue', ['state', 'sweep_id', 'number'], unique=False)
        batch_op.create_index(batch_op.f('ix_sweep_trials_sweep_id'), ['sweep_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sweep_trials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sweep_trials_sweep_id'))
        batch_op.drop_index('ix_sweep_trials_queue')

    op.drop_table('sweep_trials')
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sweeps_state'))
        batch_op.drop_index(batch_op.f('ix_sweeps_name'))

    op.drop_table('sweeps')
