"""handler states and attempts; NOTIFY on new events (PostgreSQL)

Revision ID: 0007
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
import receiver.models


revision = '0007'
down_revision = '0005'
branch_labels = None
depends_on = None

BACKLOG = sa.text("state IN ('pending', 'failed', 'running')")


def upgrade():
    op.create_table('handler_states',
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('due_at', receiver.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('done', sa.JSON(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('claimed_at', receiver.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('updated_at', receiver.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_handler_states_event_id_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_handler_states'))
    )
    op.create_index('ix_handler_states_backlog', 'handler_states', ['due_at', 'event_id'],
                    postgresql_where=BACKLOG, sqlite_where=BACKLOG)
    op.create_table('handler_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('handler', sa.String(length=300), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('started_at', receiver.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', receiver.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_handler_attempts_event_id_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handler_attempts'))
    )
    op.create_index(op.f('ix_handler_attempts_event_id_id'), 'handler_attempts', ['event_id', 'id'])
    # Events stored before handlers existed arrived when no handler could act on them: they are
    # settled as such, not run now (a year of uploads must not all fire on upgrade). Replay
    # runs them on purpose.
    op.execute("INSERT INTO handler_states (event_id, state, due_at, attempts, done, updated_at) "
               "SELECT id, 'no_handler', received_at, 0, '[]', received_at FROM events")
    if op.get_bind().dialect.name == "postgresql":
        # Wakes a waiting `vod-receiver work` (LISTEN) as soon as an event is committed. A
        # statement trigger: one per callback's upsert, and PostgreSQL sends a channel's
        # identical notifications of one transaction once (docs/operations.md: its cost).
        op.execute("""
            CREATE FUNCTION vod_receiver_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('vod_receiver_events', '');
                RETURN NULL;
            END $$""")
        op.execute("CREATE TRIGGER events_notify AFTER INSERT ON events "
                   "FOR EACH STATEMENT EXECUTE FUNCTION vod_receiver_notify_event()")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_notify ON events")
        op.execute("DROP FUNCTION vod_receiver_notify_event()")
    op.drop_index(op.f('ix_handler_attempts_event_id_id'), table_name='handler_attempts')
    op.drop_table('handler_attempts')
    op.drop_index('ix_handler_states_backlog', table_name='handler_states')
    op.drop_table('handler_states')
