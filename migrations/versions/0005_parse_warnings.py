"""parse warnings on events; rejections resolved by a later parser

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
import receiver.models


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    # All nullable, no default: adding them rewrites no rows on either database.
    op.add_column('events', sa.Column('parse_warnings', sa.JSON(), nullable=True))
    op.add_column('rejections', sa.Column('resolved_at', receiver.models.UTCDateTime(timezone=True),
                                          nullable=True))
    op.add_column('rejections', sa.Column('resolved_event_id', sa.BigInteger(), nullable=True))


def downgrade():
    # batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table('rejections') as batch:
        batch.drop_column('resolved_event_id')
        batch.drop_column('resolved_at')
    with op.batch_alter_table('events') as batch:
        batch.drop_column('parse_warnings')
