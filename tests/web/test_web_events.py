"""The events list and the event page: filters, paging, the stored bytes shown safely, the linked
upload, handler attempts, and queueing a replay of one event."""
import re
from datetime import timedelta

import pytest
from factories import T0, deliver, new_file_upload, upload, upload_record
from sqlalchemy import select

from receiver import db
from receiver.handlers import Registry
from receiver.handlers.worker import process_event
from receiver.models import HandlerState, Replay, utcnow

from .webpage import csrf


def _ids(page, table="events"):
    body = re.search(rf'<table id="{table}">(.*?)</table>', page, re.S)
    return [int(i) for i in re.findall(r'<tr>\s*<td><a href="/admin/[a-z]+/(\d+)">', body.group(1))] if body else []


def _text(response):
    return response.get_data(as_text=True)


def test_events_are_listed_newest_first_with_links(app, client):
    ids = [upload(app, n).id for n in (1, 2, 3)]
    response = client.get("/admin/events")
    assert response.status_code == 200
    assert _ids(_text(response)) == ids[::-1]
    assert f'<a href="/admin/events/{ids[2]}">{ids[2]}</a>' in _text(response)


@pytest.mark.parametrize("args, expected", [
    ({"file_id": "f2"}, [2]),
    ({"source_context": "order-3"}, [3]),
    ({"event_type": "NewFileUpload"}, [3, 2, 1]),
    ({"event_type": "FileDeleted"}, []),
    ({"received_after": "2026-11-01T12:02"}, [3, 2]),  # datetime-local, taken as UTC
    ({"received_before": "2026-11-01T12:02:00Z", "received_after": ""}, [1]),  # empty = no filter
])
def test_the_filters_select_like_the_admin_api(app, client, args, expected):
    ids = {n: upload(app, n).id for n in (1, 2, 3)}
    response = client.get("/admin/events", query_string=args)
    assert response.status_code == 200
    assert _ids(_text(response)) == [ids[n] for n in expected]


def test_since_keeps_only_recent_events(app, client):
    deliver(app, new_file_upload("old"), received_at=utcnow() - timedelta(hours=30))
    deliver(app, new_file_upload("day"), received_at=utcnow() - timedelta(hours=3))
    deliver(app, new_file_upload("new"), received_at=utcnow() - timedelta(minutes=5))
    for since, count in (("1h", 1), ("24h", 2), ("7d", 3)):
        assert len(_ids(_text(client.get("/admin/events", query_string={"since": since})))) == count
    page = _text(client.get("/admin/events?since=24h"))
    assert '<option value="24h" selected>last 24 hours</option>' in page
    assert '<option value="1h">last hour</option>' in page


@pytest.mark.parametrize("args, message", [
    ({"received_after": "yesterday"}, "received_after: Not a valid datetime."),
    ({"since": "2h"}, "since: choose one of 1h, 24h, 7d."),
    ({"limit": "0"}, "limit: Must be greater than or equal to 1"),
    ({"cursor": "not-a-cursor"}, "cursor: Not a cursor from a previous page."),
    ({"file_id": "x" * 65}, "file_id: Length must be between 1 and 64."),
])
def test_a_bad_filter_is_a_400_with_the_message_beside_the_form(client, args, message):
    response = client.get("/admin/events", query_string=args)
    page = _text(response)
    assert response.status_code == 400
    assert message in page
    assert '<form class="filters"' in page and 'id="events"' not in page


def test_next_page_follows_the_cursor_with_the_same_filters(app, client):
    ids = [upload(app, n).id for n in range(1, 6)]
    ids.append(upload(app, 9, source_context="other").id)
    seen, url = [], "/admin/events?event_type=NewFileUpload&source_context=&limit=2"
    while url:
        page = _text(client.get(url))
        seen += _ids(page)
        found = re.search(r'<a rel="next" href="([^"]+)">Next page</a>', page)
        url = found.group(1).replace("&amp;", "&") if found else None
        if url:
            assert "event_type=NewFileUpload" in url and "limit=2" in url
    assert seen == ids[::-1]


def test_replay_these_links_to_the_confirmation_with_the_same_filters(app, client):
    upload(app, 1)
    page = _text(client.get("/admin/events?file_id=f1&limit=5"))
    link = re.search(r'<a class="button" href="([^"]+)">Replay these…</a>', page).group(1)
    assert link == "/admin/replay?file_id=f1"


def test_the_event_page_shows_every_section(app, client):
    stored = upload(app, 1, procedure_task_id="proc-1")
    page = _text(client.get(f"/admin/events/{stored.id}"))
    for heading in ("Fields", "Deliveries", "Headers", "Body", "Upload", "Handler attempts",
                    "Replay handlers"):
        assert f">{heading}</h2>" in page
    assert "proc-1" in page
    # Pretty-printed: one key a line, indented.
    body = re.search(r'<pre id="body">(.*?)</pre>', page, re.S).group(1)
    assert '\n  &#34;EventType&#34;: &#34;NewFileUpload&#34;,\n' in body
    assert '<label for="reason">Reason</label>' in page and ">Replay</button>" in page


def test_deliveries_count_first_and_last_seen(app, client):
    body = new_file_upload("f1")
    deliver(app, body, received_at=T0)
    stored = deliver(app, body, received_at=T0 + timedelta(minutes=7))
    page = _text(client.get(f"/admin/events/{stored.id}"))
    deliveries = re.search(r'<h2 id="deliveries">Deliveries</h2>(.*?)</section>', page, re.S).group(1)
    assert "<dt>Count</dt><dd>2</dd>" in deliveries
    assert "2026-11-01 12:00:00 UTC" in deliveries and "2026-11-01 12:07:00 UTC" in deliveries


def test_stored_bytes_are_escaped_never_run(app, client):
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    stored = deliver(app, new_file_upload("f1", source_context=attack),
                     headers={"Content-Type": "application/json", "X-Evil": attack})
    for path in ("/admin/events", f"/admin/events/{stored.id}"):
        page = _text(client.get(path))
        assert "<script>" not in page and "<img src=x" not in page
        assert "&lt;script&gt;" in page


def test_headers_are_shown_as_stored_with_credentials_redacted(app, client):
    from factories import sample

    response = client.post("/callbacks/vod", data=sample("v3-push-newfileupload.json"),
                           headers={"Authorization": "Bearer very-secret-value",
                                    "Content-Type": "application/json"})
    assert response.status_code == 200
    with db.session_factory(app)() as session:
        from receiver.models import Event

        event_id = session.scalar(select(Event.id))
    page = _text(client.get(f"/admin/events/{event_id}"))
    headers = re.search(r'<h2 id="headers">Headers</h2>(.*?)</section>', page, re.S).group(1)
    assert "<th scope=\"row\">Authorization</th><td>[redacted]</td>" in headers
    assert "very-secret-value" not in page


def test_the_linked_upload_is_shown_or_none(app, client):
    upload_record(app, 1)
    linked = upload(app, 1)
    alone = upload(app, 2)
    page = _text(client.get(f"/admin/events/{linked.id}"))
    assert re.search(r'<a href="/admin/uploads/\d+">Upload \d+</a>: 1.mp4, committed', page)
    page = _text(client.get(f"/admin/events/{alone.id}"))
    assert re.search(r'<h2 id="upload">Upload</h2>\s*<p>none</p>', page)


def test_handler_attempts_are_listed_with_the_traceback(make_app, app, client):
    registry = Registry()

    @registry.on("NewFileUpload")
    def refuse(event):
        raise RuntimeError("the transcoder said no")

    stored = upload(app, 1)
    assert process_event(app, stored.id, registry) == "failed"
    page = _text(client.get(f"/admin/events/{stored.id}"))
    attempts = re.search(r'<table id="attempts">(.*?)</table>', page, re.S).group(1)
    assert "test_web_events:" in attempts and "refuse" in attempts
    assert ">failed</td>" in attempts and "the transcoder said no" in attempts
    # The error opens onto its traceback.
    assert re.search(r"<details><summary>RuntimeError: the transcoder said no</summary><pre>Traceback",
                     attempts)


def test_replay_queues_the_event_for_the_worker_and_says_so(app, client):
    stored = upload(app, 1)
    response = client.post(f"/admin/events/{stored.id}/replay",
                           data={"reason": "customer asked", "csrf_token": csrf(client)})
    assert response.status_code == 303
    with db.session_factory(app)() as session:
        replay = session.scalars(select(Replay)).one()
        state = session.get(HandlerState, stored.id)
    assert (replay.origin, replay.reason, replay.target, replay.subject) == (
        "web", "customer asked", "queue", "events")
    assert replay.selection == {"ids": [stored.id]} and replay.outcomes == {"queued": 1}
    assert state.state == "pending"
    assert response.headers["Location"] == f"/admin/events/{stored.id}?queued={replay.id}"
    page = _text(client.get(response.headers["Location"]))
    assert f"Queued for the worker (replay {replay.id})" in page


@pytest.mark.parametrize("reason", ["", "   ", "x" * 1001])
def test_replay_needs_a_reason(app, client, reason):
    stored = upload(app, 1)
    response = client.post(f"/admin/events/{stored.id}/replay",
                           data={"reason": reason, "csrf_token": csrf(client)})
    assert response.status_code == 400
    assert "Reason: " in _text(response)
    with db.session_factory(app)() as session:
        assert session.scalars(select(Replay)).all() == []


def test_replaying_an_unknown_event_is_a_404(client):
    response = client.post("/admin/events/42/replay", data={"reason": "x", "csrf_token": csrf(client)})
    assert response.status_code == 404
