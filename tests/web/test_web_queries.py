"""The queries the operator page added to receiver/queries.py: capped counts, the handlers
listing (paged, on its partial index), the notified upload filter, replays."""
import pytest
from factories import upload, upload_record
from sqlalchemy import event, update

from receiver import db, queries
from receiver.handlers import Registry
from receiver.handlers.worker import process_event
from receiver.models import HandlerState, utcnow


def test_count_events_stops_past_the_cap(app):
    for n in range(1, 6):
        upload(app, n, source_context="batch" if n < 4 else "other")
    with db.session_factory(app)() as session:
        assert queries.count_events(session, {}, cap=10) == 5
        assert queries.count_events(session, {}, cap=2) == 3  # cap + 1: "more than 2"
        assert queries.count_events(session, {"source_context": "batch"}, cap=10) == 3
        assert queries.count_events(session, {}, state="dead", cap=10) == 0


@pytest.fixture
def failing(app):
    """Seven events whose handler failed, their updated_at a minute apart (ids in that order)."""
    registry = Registry()

    @registry.on("NewFileUpload")
    def refuse(event):
        raise RuntimeError("no")

    ids = [upload(app, n).id for n in range(1, 8)]
    for event_id in ids:
        process_event(app, event_id, registry)
    base = utcnow()
    with db.session_factory(app)() as session, session.begin():
        for i, event_id in enumerate(ids):
            session.execute(update(HandlerState).where(HandlerState.event_id == event_id)
                            .values(updated_at=base.replace(microsecond=0) if i < 3 else base,
                                    state="dead" if i % 2 else "failed"))
    return ids


def test_handler_states_page_through_every_row_once(app, failing):
    seen, cursor = [], None
    with db.session_factory(app)() as session:
        while True:
            page = queries.list_handler_states(session, None, 2, cursor)
            seen += [row.event_id for row in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sorted(seen) == sorted(failing) and len(seen) == len(set(seen))
        dead = [row.event_id for row in queries.list_handler_states(session, "dead", 50).items]
        assert sorted(dead) == [failing[i] for i in (1, 3, 5)]
        assert queries.list_handler_states(session, "pending", 50).items == []


def test_pending_handler_states_come_next_due_first(app):
    ids = [upload(app, n).id for n in (1, 2, 3)]
    base = utcnow()
    with db.session_factory(app)() as session, session.begin():
        for offset, event_id in zip((30, 10, 20), ids):
            session.add(HandlerState(event_id=event_id, state="pending", attempts=0, done=[],
                                     due_at=base.replace(second=offset % 60), updated_at=base))
    with db.session_factory(app)() as session:
        first = queries.list_handler_states(session, "pending", 2)
        rest = queries.list_handler_states(session, "pending", 2, first.next_cursor)
    assert [r.event_id for r in first.items + rest.items] == [ids[1], ids[2], ids[0]]


def test_the_trouble_listing_reads_its_partial_index_on_sqlite(app, failing):
    if db.engine(app).dialect.name != "sqlite":
        pytest.skip("the plan is checked on SQLite; PostgreSQL's depends on its statistics")

    def run(session):
        page = queries.list_handler_states(session, "dead", 2)
        queries.list_handler_states(session, None, 2, page.next_cursor)

    plans = _plans(app, run)
    assert len(plans) == 2
    for plan in plans:
        assert "ix_handler_states_trouble" in plan, plan


def _plans(app, run):
    """The SQLite plan of each statement `run(session)` executes."""
    engine = db.engine(app)
    statements = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with db.session_factory(app)() as session:
            run(session)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    with engine.connect() as connection:
        return [" ".join(str(row) for row in connection.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {statement}", parameters)) for statement, parameters in statements]


@pytest.mark.parametrize("filters", [{}, {"pending": True}, {"notified": True}])
def test_an_upload_finds_its_event_by_its_key_not_by_walking_every_upload_event(app, filters):
    if db.engine(app).dialect.name != "sqlite":
        pytest.skip("the plan is checked on SQLite; PostgreSQL's depends on its statistics")
    [plan] = _plans(app, lambda session: queries.list_uploads(session, filters))
    assert "ix_events_event_type_received_at_id" not in plan
    assert "ix_events_file_id" in plan and "ix_events_source_context" in plan


def test_uploads_notified_or_not(app):
    waiting = upload_record(app, 1).id
    notified = upload_record(app, 2).id
    upload(app, 2)
    failed = upload_record(app, 3, state="failed").id
    with db.session_factory(app)() as session:
        def ids(filters):
            return [u.id for u, _event in queries.list_uploads(session, filters).items]

        assert ids({"notified": True}) == [notified]
        assert ids({"notified": False}) == [failed, waiting]
        assert ids({"notified": False, "state": "committed"}) == [waiting]


def test_replays_newest_first(app):
    from receiver.handlers import replay

    stored = upload(app, 1)
    made = [replay.start(app, replay.Selection("events", ids=(stored.id,)), "queue", 1,
                         reason=str(n), origin="web").id for n in range(3)]
    with db.session_factory(app)() as session:
        assert [r.id for r in queries.list_replays(session, 2)] == made[:0:-1]
        assert [r.id for r in queries.list_replays(session, 5, before_id=made[1])] == [made[0]]
