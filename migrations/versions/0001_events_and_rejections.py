"""events and rejections

Revision ID: 0001
Revises:
Create Date: 2026-11-25 03:46:54.093528
"""
from alembic import op
import sqlalchemy as sa
import receiver.models


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dedup_key', sa.String(length=64), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('event_type', sa.String(length=128), nullable=False),
    sa.Column('data_key', sa.String(length=128), nullable=True),
    sa.Column('event_handle', sa.String(length=256), nullable=True),
    sa.Column('task_id', sa.String(length=256), nullable=True),
    sa.Column('status', sa.String(length=64), nullable=True),
    sa.Column('file_id', sa.String(length=64), nullable=True),
    sa.Column('file_ids', sa.JSON(), nullable=True),
    sa.Column('media_url', sa.Text(), nullable=True),
    sa.Column('source_type', sa.String(length=64), nullable=True),
    sa.Column('source_context', sa.String(length=1000), nullable=True),
    sa.Column('procedure_task_id', sa.String(length=256), nullable=True),
    sa.Column('review_audio_video_task_id', sa.String(length=256), nullable=True),
    sa.Column('media_name', sa.Text(), nullable=True),
    sa.Column('media_type', sa.String(length=64), nullable=True),
    sa.Column('storage_region', sa.String(length=64), nullable=True),
    sa.Column('class_id', sa.BigInteger(), nullable=True),
    sa.Column('media_created_at', receiver.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('duration', sa.Double(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('delivery_count', sa.Integer(), nullable=False),
    sa.Column('last_seen_at', receiver.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', receiver.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('body_size', sa.BigInteger(), nullable=False),
    sa.Column('content_type', sa.Text(), nullable=True),
    sa.Column('remote_addr', sa.Text(), nullable=True),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('dedup_key', name=op.f('uq_events_dedup_key'))
    )
    op.create_index(op.f('ix_events_event_type_received_at_id'), 'events', ['event_type', 'received_at', 'id'])
    op.create_index(op.f('ix_events_file_id'), 'events', ['file_id'])
    op.create_index(op.f('ix_events_procedure_task_id'), 'events', ['procedure_task_id'])
    op.create_index(op.f('ix_events_received_at_id'), 'events', ['received_at', 'id'])
    op.create_index(op.f('ix_events_source_context'), 'events', ['source_context'])
    op.create_index(op.f('ix_events_task_id'), 'events', ['task_id'])

    op.create_table('rejections',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('body_truncated', sa.Boolean(), nullable=False),
    sa.Column('received_at', receiver.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('body_sha256', sa.String(length=64), nullable=False),
    sa.Column('body_size', sa.BigInteger(), nullable=False),
    sa.Column('content_type', sa.Text(), nullable=True),
    sa.Column('remote_addr', sa.Text(), nullable=True),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rejections'))
    )
    op.create_index(op.f('ix_rejections_reason_received_at_id'), 'rejections', ['reason', 'received_at', 'id'])
    op.create_index(op.f('ix_rejections_received_at_id'), 'rejections', ['received_at', 'id'])



def downgrade():
    op.drop_index(op.f('ix_rejections_received_at_id'), table_name='rejections')
    op.drop_index(op.f('ix_rejections_reason_received_at_id'), table_name='rejections')

    op.drop_table('rejections')
    op.drop_index(op.f('ix_events_task_id'), table_name='events')
    op.drop_index(op.f('ix_events_source_context'), table_name='events')
    op.drop_index(op.f('ix_events_received_at_id'), table_name='events')
    op.drop_index(op.f('ix_events_procedure_task_id'), table_name='events')
    op.drop_index(op.f('ix_events_file_id'), table_name='events')
    op.drop_index(op.f('ix_events_event_type_received_at_id'), table_name='events')

    op.drop_table('events')
