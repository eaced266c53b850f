"""overview: hourly callback counts, duplicate deliveries (by trigger), uploads' events, trouble indexes

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

from receiver.models import UTCDateTime

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TROUBLE = "state IN ('failed', 'dead')"
_FAILED = "outcome <> 'succeeded'"
_WAITING = "event_id IS NULL AND state <> 'failed'"
_INSERT = ("INSERT INTO duplicate_deliveries (event_id, received_at, deliveries) "
           "VALUES (NEW.id, NEW.last_seen_at, NEW.delivery_count - OLD.delivery_count)")


def upgrade():
    op.create_table(
        'duplicate_deliveries',
        sa.Column('id', _id, nullable=False),
        sa.Column('event_id', _id, nullable=False),
        sa.Column('received_at', UTCDateTime(), nullable=False),
        sa.Column('deliveries', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_duplicate_deliveries')),
    )
    op.create_index(op.f('ix_duplicate_deliveries_received_at'), 'duplicate_deliveries',
                    ['received_at'])
    op.create_table(
        'callback_hours',
        sa.Column('hour', UTCDateTime(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('key', sa.String(length=128), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('hour', 'kind', 'key', name=op.f('pk_callback_hours')),
    )
    op.create_index(op.f('ix_callback_hours_kind_key_count'), 'callback_hours',
                    ['kind', 'key', 'count'])
    op.create_table(
        'rollup_marks',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('filled_until', UTCDateTime(), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_rollup_marks')),
    )
    op.execute("INSERT INTO rollup_marks (name, filled_until, version) "
               "VALUES ('callback_hours', NULL, 0)")
    op.create_index('ix_handler_states_trouble', 'handler_states', ['updated_at', 'event_id'],
                    postgresql_where=sa.text(_TROUBLE), sqlite_where=sa.text(_TROUBLE))
    with op.batch_alter_table('uploads') as batch:
        batch.add_column(sa.Column('event_id', sa.BigInteger(), nullable=True))
    op.create_index('ix_uploads_waiting', 'uploads', ['started_at'],
                    postgresql_where=sa.text(_WAITING), sqlite_where=sa.text(_WAITING))
    op.create_index('ix_handler_attempts_failed', 'handler_attempts', ['id'],
                    postgresql_where=sa.text(_FAILED), sqlite_where=sa.text(_FAILED))
    # Duplicates stored before this revision: the extra deliveries of each event, at its last
    # delivery (when the earlier ones came was not kept).
    op.execute("INSERT INTO duplicate_deliveries (event_id, received_at, deliveries) "
               "SELECT id, last_seen_at, delivery_count - 1 FROM events WHERE delivery_count > 1")
    # A trigger rather than a statement in the writer: only a duplicate pays for it, inside the
    # database, and every channel's duplicates (push, pull, spool, reparse) are counted alike.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION vod_receiver_count_duplicate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {_INSERT};
                RETURN NULL;
            END $$""")
        op.execute("CREATE TRIGGER events_duplicate AFTER UPDATE OF delivery_count ON events "
                   "FOR EACH ROW WHEN (NEW.delivery_count > OLD.delivery_count) "
                   "EXECUTE FUNCTION vod_receiver_count_duplicate()")
    else:
        op.execute("CREATE TRIGGER events_duplicate AFTER UPDATE OF delivery_count ON events "
                   f"FOR EACH ROW WHEN NEW.delivery_count > OLD.delivery_count BEGIN {_INSERT}; END")


def downgrade():
    op.execute("DROP TRIGGER events_duplicate" + (
        " ON events" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION vod_receiver_count_duplicate()")
    op.drop_index('ix_handler_attempts_failed', table_name='handler_attempts')
    op.drop_index('ix_uploads_waiting', table_name='uploads')
    with op.batch_alter_table('uploads') as batch:
        batch.drop_column('event_id')
    op.drop_index('ix_handler_states_trouble', table_name='handler_states')
    op.drop_table('rollup_marks')
    op.drop_index(op.f('ix_callback_hours_kind_key_count'), table_name='callback_hours')
    op.drop_table('callback_hours')
    op.drop_index(op.f('ix_duplicate_deliveries_received_at'), table_name='duplicate_deliveries')
    op.drop_table('duplicate_deliveries')
