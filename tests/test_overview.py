"""The overview's counts: hourly and daily, the ledger, handlers and uploads — the same figures
the full scan (queries.stats) gives, kept for closed hours so that the events are not scanned."""
import json
from datetime import timedelta

from sqlalchemy import insert, select, update

from factories import T0, deliver, new_file_upload, upload_record
from receiver import db, overview, queries, reparse, spool, store
from receiver.events import Refusal
from receiver.models import (CallbackHour, DuplicateDelivery, Event, HandlerState, Rejection, Upload,
                             utcnow)

NOW = T0 + timedelta(hours=30, minutes=20)  # T0 is 2026-11-01 12:00 UTC


def _summary(app, now=NOW):
    with app.app_context(), db.session_factory(app)() as session:
        return overview.summary(session, app.config["RECEIVER_SPOOL_DIR"], now=now)


def _refuse(app, received_at, body=b'{"EventType": 3}', reason="invalid_event"):
    delivery = store.Delivery(body=body, received_at=received_at)
    with db.session_factory(app)() as session, session.begin():
        store.reject(session.connection(), delivery, Refusal(reason, "no", status=422))


def _store_traffic(app):
    # Hour 12 on day one: two events, one delivered twice more; a rejection. Hour 17: one event.
    # The current hour (18:00 on day two): one event, a duplicate of an old one, a rejection.
    deliver(app, new_file_upload("f1"), T0)
    for minutes in (5, 6):
        deliver(app, new_file_upload("f1"), T0 + timedelta(minutes=minutes))
    deliver(app, new_file_upload("f2"), T0 + timedelta(minutes=30))
    _refuse(app, T0 + timedelta(minutes=40))
    deliver(app, new_file_upload("f3"), T0 + timedelta(hours=5))
    deliver(app, new_file_upload("f4"), NOW - timedelta(minutes=10))
    deliver(app, new_file_upload("f2"), NOW - timedelta(minutes=5))
    _refuse(app, NOW - timedelta(minutes=1), reason="invalid_json")


def _by_start(rows, key):
    return {row[key]: (row["events"], row["duplicates"], row["rejections"]) for row in rows}


def test_hours_days_and_ledger_count_every_delivery_once(app):
    _store_traffic(app)
    data = _summary(app)
    hours = _by_start(data["hours"], "start")
    assert len(hours) == 24 and data["hours"][-1]["start"] == T0 + timedelta(hours=30)
    assert hours[T0 + timedelta(hours=30)] == (1, 1, 1)  # the current hour, counted live
    assert hours[T0 + timedelta(hours=7)] == (0, 0, 0)
    assert T0 + timedelta(hours=5) not in hours  # more than 24 hours ago
    days = _by_start(data["days"], "day")
    assert len(days) == 30 and data["days"][-1]["day"] == NOW.date()
    assert days[T0.date()] == (3, 2, 1) and days[NOW.date()] == (1, 1, 1)
    assert data["ledger"] == {"deliveries": 9, "events": 4, "duplicates": 3, "rejections": 2,
                              "resolved": 0}
    assert data["event_types"] == [{"event_type": "NewFileUpload", "events": 4, "duplicates": 3}]
    assert data["rejection_reasons"] == [{"reason": "invalid_event", "rejections": 1},
                                         {"reason": "invalid_json", "rejections": 1}]
    with db.session_factory(app)() as session:
        full_scan = queries.stats(session)["ledger"]
    assert {k: full_scan[k] for k in ("deliveries", "events", "duplicates", "rejections")} == {
        k: data["ledger"][k] for k in ("deliveries", "events", "duplicates", "rejections")}


def test_a_duplicate_is_recorded_by_the_trigger_with_its_arrival(app, session):
    deliver(app, new_file_upload("f1"), T0)
    outcome = deliver(app, new_file_upload("f1"), T0 + timedelta(minutes=9))
    assert outcome.kind == "duplicate"
    rows = session.execute(select(DuplicateDelivery.received_at, DuplicateDelivery.deliveries)).all()
    assert rows == [(T0 + timedelta(minutes=9), 1)]


def test_closed_hours_are_read_from_the_kept_counts_not_the_events(app, session):
    _store_traffic(app)
    _summary(app)
    kept = session.execute(select(CallbackHour.hour, CallbackHour.kind, CallbackHour.count)
                           .where(CallbackHour.kind == "events")).all()
    assert sorted(kept) == [(T0, "events", 2), (T0 + timedelta(hours=5), "events", 1)]
    # Changing a counted hour behind the overview's back changes nothing shown...
    session.execute(update(CallbackHour).where(CallbackHour.hour == T0, CallbackHour.kind == "events")
                    .values(count=7))
    session.commit()
    assert _summary(app)["ledger"]["events"] == 9
    # ...until those hours are invalidated and counted again from the rows.
    with app.app_context():
        overview.invalidate(session, T0 + timedelta(minutes=59))
        session.commit()
    assert _summary(app)["ledger"]["events"] == 4


def test_an_hour_is_counted_once_settled_and_later_hours_stay_live(app, session):
    deliver(app, new_file_upload("f1"), NOW - timedelta(minutes=25))  # 17:55, settled at 18:20
    deliver(app, new_file_upload("f2"), NOW - timedelta(minutes=19))  # 18:01: the live hour
    _summary(app)
    assert session.scalars(select(CallbackHour.hour)).all() == [NOW.replace(minute=0) - timedelta(hours=1)]
    # Two minutes after the hour the previous one is not settled yet: nothing is kept.
    session.execute(CallbackHour.__table__.delete())
    session.commit()
    with app.app_context():
        overview.invalidate(session, T0)
        session.commit()
    data = _summary(app, now=NOW.replace(minute=1))
    assert session.scalars(select(CallbackHour.hour)).all() == []
    assert data["ledger"]["events"] == 2


def test_a_drained_spool_file_from_a_counted_hour_is_counted(app):
    _store_traffic(app)
    assert _summary(app)["ledger"]["events"] == 4
    old = store.Delivery(body=new_file_upload("f9"), received_at=T0 + timedelta(minutes=3))
    spool.write(app.config["RECEIVER_SPOOL_DIR"], old)
    assert spool.drain(app) == 1
    data = _summary(app)
    assert data["ledger"]["events"] == 5
    assert _by_start(data["days"], "day")[T0.date()] == (4, 2, 1)


def test_a_reparsed_rejection_moves_from_rejections_to_events(app):
    body = new_file_upload("f7")
    delivery = store.Delivery(body=body, received_at=T0 + timedelta(minutes=2))
    with db.session_factory(app)() as session, session.begin():
        store.reject(session.connection(), delivery, Refusal("invalid_event", "old code", status=422))
    before = _summary(app)["ledger"]
    assert (before["events"], before["rejections"]) == (0, 1)
    report = reparse.reparse(app, dry_run=False)
    assert report.new == 1
    after = _summary(app)["ledger"]
    assert (after["events"], after["rejections"], after["resolved"]) == (1, 0, 1)
    assert after["deliveries"] == before["deliveries"]


def test_handlers_and_uploads_at_a_glance(app, session):
    now = utcnow()
    for n in range(1, 5):
        deliver(app, new_file_upload(f"f{n}"), now - timedelta(minutes=n))
    ids = session.scalars(select(Event.id).order_by(Event.id)).all()
    states = {ids[0]: "dead", ids[1]: "failed", ids[2]: "processed"}  # ids[3]: not seen yet
    session.execute(insert(HandlerState), [
        {"event_id": i, "state": s, "due_at": now, "attempts": 1, "done": [], "updated_at": now}
        for i, s in states.items()])
    session.commit()
    upload_record(app, 1, file_id="f1", started_at=now - timedelta(hours=1))  # notified
    upload_record(app, 2, file_id="f-none", started_at=now - timedelta(hours=2))  # waiting
    upload_record(app, 3, state="failed", started_at=now - timedelta(hours=3))
    upload_record(app, 4, file_id="f-old", started_at=now - timedelta(days=40))  # waiting still
    with app.app_context():
        data = overview.summary(session, app.config["RECEIVER_SPOOL_DIR"], now=now)
    assert data["handlers"]["dead"] == 1 and data["handlers"]["failed"] == 1
    assert data["handlers"]["pending"] == 1 and data["handlers"]["oldest_pending_seconds"] > 0
    assert data["uploads"]["waiting"] == 2 and data["uploads"]["failed"] == 1
    assert 40 * 86400 - 100 < data["uploads"]["oldest_waiting_seconds"] < 40 * 86400 + 100
    assert data["spool"] == {"depth": 0, "oldest_age_seconds": None, "quarantined": 0}


def test_counts_survive_an_emptied_marker_table(app, session):
    deliver(app, new_file_upload("f1"), T0)
    session.execute(overview.RollupMark.__table__.delete())
    session.commit()
    assert _summary(app)["ledger"]["events"] == 1
    assert _summary(app)["ledger"]["events"] == 1


def test_rejection_counts_ignore_those_already_resolved_before_counting(app, session):
    _refuse(app, T0, body=json.dumps({"x": 1}).encode())
    session.execute(update(Rejection).values(resolved_at=T0))
    session.commit()
    assert _summary(app)["ledger"]["rejections"] == 0


def test_an_upload_found_notified_is_remembered_and_one_notified_later_stops_waiting(app, session):
    now = utcnow()
    deliver(app, new_file_upload("f1"), now - timedelta(minutes=50))
    upload_record(app, 1, file_id="f1", started_at=now - timedelta(hours=1))
    upload_record(app, 2, file_id="f2", started_at=now - timedelta(minutes=30))
    with app.app_context():
        assert overview.uploads(session, now)["waiting"] == 1
    linked = dict(session.execute(select(Upload.file_id, Upload.event_id)).all())
    assert linked["f1"] is not None and linked["f2"] is None
    deliver(app, new_file_upload("f2"), now - timedelta(minutes=1))  # VOD's callback, late
    with app.app_context():
        assert overview.uploads(session, now) == {"waiting": 0, "failed": 0,
                                                  "oldest_waiting_seconds": None}
    assert None not in dict(session.execute(select(Upload.file_id, Upload.event_id)).all()).values()
