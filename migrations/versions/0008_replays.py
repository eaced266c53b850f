"""replays and the rows each acted on

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
import receiver.models


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('replays',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('started_at', receiver.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', receiver.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('origin', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=16), nullable=False),
    sa.Column('selection', sa.JSON(), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('selected', sa.Integer(), nullable=False),
    sa.Column('outcomes', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replays'))
    )
    op.create_table('replay_items',
    sa.Column('replay_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('row_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['replay_id'], ['replays.id'], name=op.f('fk_replay_items_replay_id_replays'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('replay_id', 'row_id', name=op.f('pk_replay_items'))
    )
    op.create_index(op.f('ix_replay_items_row_id'), 'replay_items', ['row_id'])


def downgrade():
    op.drop_index(op.f('ix_replay_items_row_id'), table_name='replay_items')
    op.drop_table('replay_items')
    op.drop_table('replays')
