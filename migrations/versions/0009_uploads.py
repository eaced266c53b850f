"""uploads: our own uploads to VOD, from ApplyUpload to the callback

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

from receiver.models import UTCDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        'uploads',
        sa.Column('id', _id, nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('started_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.Column('stored_at', UTCDateTime(), nullable=True),
        sa.Column('committed_at', UTCDateTime(), nullable=True),
        sa.Column('failed_at', UTCDateTime(), nullable=True),
        sa.Column('file_path', sa.Text(), nullable=False),
        sa.Column('file_name', sa.Text(), nullable=False),
        sa.Column('file_size', sa.BigInteger(), nullable=True),
        sa.Column('file_mtime_ns', sa.BigInteger(), nullable=True),
        sa.Column('file_sha256', sa.String(length=64), nullable=True),
        sa.Column('source_context', sa.String(length=250), nullable=True),
        sa.Column('source_context_generated', sa.Boolean(), nullable=False),
        sa.Column('media_type', sa.String(length=64), nullable=True),
        sa.Column('media_name', sa.Text(), nullable=True),
        sa.Column('procedure', sa.Text(), nullable=True),
        sa.Column('storage_region', sa.String(length=64), nullable=True),
        sa.Column('sub_app_id', sa.BigInteger(), nullable=True),
        sa.Column('class_id', sa.BigInteger(), nullable=True),
        sa.Column('session_context', sa.Text(), nullable=True),
        sa.Column('expire_time', sa.String(length=64), nullable=True),
        sa.Column('cover_path', sa.Text(), nullable=True),
        sa.Column('api_region', sa.String(length=64), nullable=True),
        sa.Column('part_size', sa.BigInteger(), nullable=True),
        sa.Column('resumes', sa.Integer(), nullable=False),
        sa.Column('vod_session_key', sa.Text(), nullable=True),
        sa.Column('temp_secret_id', sa.Text(), nullable=True),
        sa.Column('temp_secret_key', sa.Text(), nullable=True),
        sa.Column('temp_token', sa.Text(), nullable=True),
        sa.Column('session_expires_at', UTCDateTime(), nullable=True),
        sa.Column('storage_bucket', sa.String(length=256), nullable=True),
        sa.Column('cos_region', sa.String(length=64), nullable=True),
        sa.Column('media_storage_path', sa.Text(), nullable=True),
        sa.Column('cover_storage_path', sa.Text(), nullable=True),
        sa.Column('file_id', sa.String(length=64), nullable=True),
        sa.Column('media_url', sa.Text(), nullable=True),
        sa.Column('cover_url', sa.Text(), nullable=True),
        sa.Column('failed_step', sa.String(length=16), nullable=True),
        sa.Column('error_code', sa.String(length=128), nullable=True),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_uploads')),
    )
    op.create_index(op.f('ix_uploads_started_at_id'), 'uploads', ['started_at', 'id'])
    op.create_index(op.f('ix_uploads_state_started_at'), 'uploads', ['state', 'started_at'])
    op.create_index(op.f('ix_uploads_file_sha256'), 'uploads', ['file_sha256'])
    op.create_index(op.f('ix_uploads_source_context'), 'uploads', ['source_context'])
    op.create_index(op.f('ix_uploads_file_id'), 'uploads', ['file_id'])


def downgrade():
    op.drop_table('uploads')
