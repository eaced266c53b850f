"""The rejection, upload, handler and replay pages, re-parse, and the bulk replay's confirmation."""
import json
import re
from datetime import timedelta

import pytest
from factories import T0, new_file_upload, upload, upload_record
from sqlalchemy import select

from receiver import db, store
from receiver.events import Refusal
from receiver.handlers import Registry
from receiver.handlers.worker import process_event
from receiver.models import Event, HandlerState, Rejection, Replay
from receiver.store import Delivery
from receiver.web import views

from .webpage import TOKEN, csrf

# A NewFileUpload whose CreateTime is a Unix number: refused as invalid_event before issue 12.
ODD = json.loads(new_file_upload("f-odd", source_context="order-7"))
ODD["FileUploadEvent"]["MediaBasicInfo"]["CreateTime"] = 1546000000
ODD_BODY = json.dumps(ODD).encode()


def _refused(app, body, reason="invalid_event", received_at=T0, status=422):
    delivery = Delivery(body=body, received_at=received_at, remote_addr="10.1.2.3",
                        headers={"Content-Type": "application/json"})
    with db.session_factory(app)() as session, session.begin():
        return store.reject(session.connection(), delivery, Refusal(reason, "refused", status))


def _ids(page, table):
    body = re.search(rf'<table id="{table}">(.*?)</table>', page, re.S)
    return [int(i) for i in re.findall(r'<tr>\s*<td><a href="/admin/[a-z]+/(\d+)">', body.group(1))] if body else []


def _text(response):
    return response.get_data(as_text=True)


# Rejections.

def test_rejections_are_listed_and_filtered_by_reason(app, client):
    first = _refused(app, b"not json", reason="invalid_json")
    second = _refused(app, ODD_BODY, received_at=T0 + timedelta(minutes=1))
    assert _ids(_text(client.get("/admin/rejections")), "rejections") == [second, first]
    page = _text(client.get("/admin/rejections?reason=invalid_json"))
    assert _ids(page, "rejections") == [first]
    assert '<label for="reason">Reason</label>' in page


def test_a_bad_rejection_filter_is_a_400_beside_the_form(client):
    response = client.get("/admin/rejections?received_before=soon")
    assert response.status_code == 400
    assert "received_before: Not a valid datetime." in _text(response)


def test_the_rejection_page_shows_the_exact_bytes_escaped(app, client):
    rejection_id = _refused(app, b'<script>alert(1)</script>\xff\xfe', reason="invalid_json")
    page = _text(client.get(f"/admin/rejections/{rejection_id}"))
    body = re.search(r'<pre id="body">(.*?)</pre>', page, re.S).group(1)
    assert body == r"&lt;script&gt;alert(1)&lt;/script&gt;\xff\xfe"
    assert "<dt>Reason</dt><dd>invalid_json</dd>" in page and "<dt>Message</dt><dd>refused</dd>" in page


def test_only_a_refused_body_offers_re_parse(app, client):
    body_refusal = _refused(app, ODD_BODY)
    request_refusal = _refused(app, ODD_BODY, reason="bad_token", status=401)
    assert ">Re-parse</button>" in _text(client.get(f"/admin/rejections/{body_refusal}"))
    assert ">Re-parse</button>" not in _text(client.get(f"/admin/rejections/{request_refusal}"))
    response = client.post(f"/admin/rejections/{request_refusal}/reparse",
                           data={"reason": "try", "csrf_token": csrf(client)})
    assert response.status_code == 400
    assert "This rejection cannot be re-parsed." in _text(response)


def test_re_parse_stores_the_event_and_records_it_like_a_replay(app, client):
    rejection_id = _refused(app, ODD_BODY)
    response = client.post(f"/admin/rejections/{rejection_id}/reparse",
                           data={"reason": "parser fixed in issue 12", "csrf_token": csrf(client)})
    assert response.status_code == 303
    with db.session_factory(app)() as session:
        event = session.scalars(select(Event)).one()
        rejection = session.get(Rejection, rejection_id)
        record = session.scalars(select(Replay)).one()
    assert rejection.resolved_event_id == event.id and event.file_id == "f-odd"
    assert (record.subject, record.origin, record.target, record.reason) == (
        "rejections", "web", "reparse", "parser fixed in issue 12")
    assert record.selection == {"ids": [rejection_id]} and record.outcomes == {"stored": 1}
    assert record.finished_at is not None
    page = _text(client.get(response.headers["Location"]))
    assert f"Re-parsed (replay {record.id}): stored" in page
    assert f'<a href="/admin/events/{event.id}">event {event.id}</a>' in page
    assert ">Re-parse</button>" not in page  # resolved now


def test_re_parse_needs_a_reason(app, client):
    rejection_id = _refused(app, ODD_BODY)
    response = client.post(f"/admin/rejections/{rejection_id}/reparse",
                           data={"reason": "", "csrf_token": csrf(client)})
    assert response.status_code == 400
    with db.session_factory(app)() as session:
        assert session.scalars(select(Event)).all() == []
        assert session.scalars(select(Replay)).all() == []


# Uploads.

@pytest.fixture
def uploads(app):
    """One upload of each status: waiting (committed, no callback), notified, failed, started."""
    waiting = upload_record(app, 1).id
    notified = upload_record(app, 2).id
    upload(app, 2)  # its callback
    failed = upload_record(app, 3, state="failed").id
    started = upload_record(app, 4, state="started").id
    return {"waiting": waiting, "notified": notified, "failed": failed, "started": started}


@pytest.mark.parametrize("status, expected", [
    (None, ["started", "failed", "notified", "waiting"]),
    ("waiting", ["started", "waiting"]),
    ("notified", ["notified"]),
    ("failed", ["failed"]),
    ("started", ["started"]),
    ("committed", ["waiting"]),
    ("stored", []),
])
def test_uploads_are_filtered_by_the_status_the_list_shows(client, uploads, status, expected):
    response = client.get("/admin/uploads", query_string={"status": status} if status else {})
    assert response.status_code == 200
    assert _ids(_text(response), "uploads") == [uploads[name] for name in expected]


def test_uploads_older_than(client, uploads):
    # T0 is in the past: every upload is older than a minute, none older than 100 years.
    assert len(_ids(_text(client.get("/admin/uploads?older_than=1m")), "uploads")) == 4
    assert _ids(_text(client.get("/admin/uploads?older_than=36500d")), "uploads") == []


@pytest.mark.parametrize("args, message", [
    ({"status": "lost"}, "status: choose one of waiting, notified, failed, started, stored, committed."),
    ({"older_than": "ten minutes"}, "older_than: Give a number and a unit, e.g. 10m."),
])
def test_a_bad_upload_filter_is_a_400_beside_the_form(client, args, message):
    response = client.get("/admin/uploads", query_string=args)
    assert response.status_code == 400
    assert message in _text(response)


def test_the_upload_page_shows_its_steps_error_and_event(app, client, uploads):
    page = _text(client.get(f"/admin/uploads/{uploads['notified']}"))
    assert re.search(r'<a href="/admin/events/\d+">Event \d+</a>: NewFileUpload f2', page)
    assert "notified" in page
    page = _text(client.get(f"/admin/uploads/{uploads['failed']}"))
    assert "Failed at apply: AuthFailure.SignatureFailure bad signature" in page
    assert "none yet" in page


# Handlers.

@pytest.fixture
def troubled(make_app):
    """Events whose handlers failed once, died (out of attempts), and succeeded."""
    app = make_app(RECEIVER_ADMIN_TOKENS=[TOKEN], RECEIVER_HANDLER_MAX_ATTEMPTS=2,
                   RECEIVER_HANDLER_BACKOFF=3600)
    registry = Registry()

    @registry.on("NewFileUpload")
    def handler(event):
        if event.file_id != "f1":
            raise RuntimeError(f"cannot handle {event.file_id}")

    ok, failing, dying = (upload(app, n).id for n in (1, 2, 3))
    for event_id in (ok, failing, dying):
        process_event(app, event_id, registry)
    process_event(app, dying, registry, force=True)
    return app, {"ok": ok, "failed": failing, "dead": dying}


def test_handlers_lists_failed_and_dead_events_with_their_last_error(troubled):
    app, ids = troubled
    client = app.test_client()
    client.post("/admin/sign-in", data={"token": TOKEN})
    with db.session_factory(app)() as session:
        states = {i: session.get(HandlerState, i).state for i in ids.values()}
    assert states == {ids["ok"]: "processed", ids["failed"]: "failed", ids["dead"]: "dead"}
    page = _text(client.get("/admin/handlers"))
    assert sorted(_ids(page, "handlers")) == sorted([ids["failed"], ids["dead"]])
    assert "cannot handle f3" in page
    assert _ids(_text(client.get("/admin/handlers?state=dead")), "handlers") == [ids["dead"]]
    assert _ids(_text(client.get("/admin/handlers?state=failed")), "handlers") == [ids["failed"]]
    assert _ids(_text(client.get("/admin/handlers?state=pending")), "handlers") == []
    response = client.get("/admin/handlers?state=processed")
    assert response.status_code == 400
    assert "state: choose one of failed, dead, pending." in _text(response)


# Bulk replay.

def test_the_confirmation_counts_and_replay_queues_them(app, client):
    for n in (1, 2, 3):
        upload(app, n, source_context="batch" if n < 3 else "other")
    page = _text(client.get("/admin/replay?source_context=batch"))
    assert '<p id="count">2 events match.</p>' in page
    assert ">Replay 2 events</button>" in page
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    response = client.post("/admin/replay", data={"source_context": "batch", "reason": "backfill",
                                                  "csrf_token": token})
    assert response.status_code == 303
    with db.session_factory(app)() as session:
        record = session.scalars(select(Replay)).one()
    assert response.headers["Location"] == f"/admin/replays/{record.id}"
    assert (record.origin, record.reason, record.selected, record.outcomes) == (
        "web", "backfill", 2, {"queued": 2})
    assert record.selection == {"source_context": "batch"}
    page = _text(client.get(response.headers["Location"]))
    assert "queued 2" in page and "backfill" in page


def test_the_confirmation_turns_since_into_the_instant_it_meant(app, client):
    from factories import deliver
    from receiver.models import utcnow

    deliver(app, new_file_upload("recent"), received_at=utcnow() - timedelta(minutes=5))
    deliver(app, new_file_upload("old"), received_at=utcnow() - timedelta(hours=5))
    page = _text(client.get("/admin/replay?since=1h"))
    assert '<p id="count">1 event match.</p>' in page
    form = re.search(r'<form method="post" action="/admin/replay">.*?</form>', page, re.S).group(0)
    after = re.search(r'<input type="hidden" name="received_after" value="([^"]+)">', form).group(1)
    assert 'name="since"' not in form
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form).group(1)
    client.post("/admin/replay", data={"received_after": after, "reason": "recent", "csrf_token": token})
    with db.session_factory(app)() as session:
        record = session.scalars(select(Replay)).one()
    assert record.selection == {"received_after": after} and record.selected == 1


def test_a_selection_above_the_cap_is_refused(app, client, monkeypatch):
    monkeypatch.setattr(views, "REPLAY_CAP", 2)
    for n in (1, 2, 3):
        upload(app, n)
    page = _text(client.get("/admin/replay"))
    assert "More than 2 events match." in page and "narrow the filter" in page
    assert 'method="post" action="/admin/replay"' not in page
    response = client.post("/admin/replay", data={"reason": "all", "csrf_token": csrf(client)})
    assert response.status_code == 400
    assert "More than 2 events match" in _text(response)
    with db.session_factory(app)() as session:
        assert session.scalars(select(Replay)).all() == []


def test_the_confirmation_filters_by_handler_state(troubled):
    app, ids = troubled
    client = app.test_client()
    client.post("/admin/sign-in", data={"token": TOKEN})
    page = _text(client.get("/admin/replay?state=dead&event_type=NewFileUpload"))
    assert '<p id="count">1 event match.</p>' in page
    back = re.search(r'<a href="([^"]+)">Back to the events</a>', page).group(1)
    assert back == "/admin/events?event_type=NewFileUpload"
    response = client.get("/admin/replay?state=asleep")
    assert response.status_code == 400


def test_a_bulk_replay_needs_a_reason(app, client):
    upload(app, 1)
    response = client.post("/admin/replay", data={"reason": "", "csrf_token": csrf(client)})
    assert response.status_code == 400
    assert "Reason: " in _text(response)


def test_replays_are_listed_newest_first(app, client):
    stored = upload(app, 1)
    for reason in ("first", "second"):
        client.post(f"/admin/events/{stored.id}/replay", data={"reason": reason, "csrf_token": csrf(client)})
    page = _text(client.get("/admin/replays"))
    assert page.index("second") < page.index("first")
    assert page.count(">web</td>") == 2
    assert client.get("/admin/replays/999999").status_code == 404


# The overview.

def _metric(page, name):
    found = re.search(rf'<a data-metric="{re.escape(name)}" href="([^"]+)"[^>]*>([^<]*)</a>', page)
    return found.group(2), found.group(1).replace("&amp;", "&")


def test_the_overview_numbers_add_up_and_link_to_their_lists(app, client):
    from factories import deliver
    from receiver.models import utcnow

    now = utcnow()
    for n in (1, 2):
        deliver(app, new_file_upload(f"f{n}"), received_at=now - timedelta(hours=n))
    deliver(app, new_file_upload("f1"), received_at=now)  # a duplicate
    _refused(app, b"nope", reason="invalid_json", received_at=now)
    page = _text(client.get("/admin/"))
    assert _metric(page, "deliveries")[0] == "4"
    assert _metric(page, "events") == ("2", "/admin/events")
    assert _metric(page, "duplicates")[0] == "1"
    assert _metric(page, "rejections") == ("1", "/admin/rejections")
    assert _metric(page, "rejections-invalid_json") == ("1", "/admin/rejections?reason=invalid_json")
    assert _metric(page, "backlog") == ("2", "/admin/handlers?state=pending")
    assert _metric(page, "handlers-dead") == ("0", "/admin/handlers?state=dead")
    assert _metric(page, "handlers-failed") == ("0", "/admin/handlers?state=failed")
    assert _metric(page, "uploads-waiting") == ("0", "/admin/uploads?status=waiting")
    assert _metric(page, "spool-depth")[0] == "0"
    assert _metric(page, "oldest-pending")[0].endswith(("h", "min"))


def test_the_overview_charts_have_a_title_per_bar_and_a_hidden_table(app, client):
    from factories import deliver
    from receiver.models import utcnow

    deliver(app, new_file_upload("f1"), received_at=utcnow())
    page = _text(client.get("/admin/"))
    for chart, bars in (("chart-hours", 24), ("chart-days", 30)):
        svg = re.search(rf'<svg id="{chart}".*?</svg>', page, re.S).group(0)
        assert svg.count('<g class="bar">') == bars
        assert f'<title id="{chart}-title">' in svg
        assert svg.count("callbacks (") == bars
        table = re.search(r'</svg>\s*<table class="visually-hidden">(.*?)</table>', page[page.index(svg):], re.S)
        assert table.group(1).count('<th scope="row">') == bars
    # The current hour and today hold the one event.
    assert ": 1 callbacks (1 events, 0 duplicates, 0 rejections)</title>" in page


def test_the_overview_is_one_page_with_main_nav_and_one_h1(client):
    page = _text(client.get("/admin/"))
    assert page.count("<h1") == 1 and "<main>" in page and "<nav" in page
