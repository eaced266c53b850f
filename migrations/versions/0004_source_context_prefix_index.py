"""source_context index usable for prefix ranges on PostgreSQL

Revision ID: 0004
Revises: 0001
"""
from alembic import op


revision = '0004'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    # SQLite compares in byte order already; only PostgreSQL needs the pattern operator class
    # (under a collation such as en_US its default one does not keep prefixes together).
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index('ix_events_source_context', table_name='events')
    op.create_index('ix_events_source_context', 'events', ['source_context'],
                    postgresql_ops={'source_context': 'varchar_pattern_ops'})


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index('ix_events_source_context', table_name='events')
    op.create_index('ix_events_source_context', 'events', ['source_context'])
