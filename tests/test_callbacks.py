"""The callback endpoint on both databases: store, dedup, refuse and record, keep bytes."""
import hashlib
import json
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from factories import callback_samples, new_file_upload, sample
from receiver import create_app, db
from receiver.models import Event, Rejection

URL = "/callbacks/vod"


def _events(session):
    return session.scalars(select(Event).order_by(Event.id)).all()


@pytest.mark.parametrize("name, body", callback_samples(), ids=[n for n, _ in callback_samples()])
def test_every_sample_callback_is_stored_with_its_bytes(client, session, name, body):
    response = client.post(URL, data=body)
    assert (response.status_code, response.get_json()) == (200, {})
    [event] = _events(session)
    document = json.loads(body)
    assert event.format == ("v2" if "eventType" in document else "v3")
    # Every sample names its type (a body without EventType is tested in test_events.py).
    assert event.event_type == (document.get("EventType") or document["eventType"])
    assert event.body == body
    assert event.body_sha256 == hashlib.sha256(body).hexdigest()
    assert event.body_size == len(body)
    assert event.delivery_count == 1
    assert event.last_seen_at == event.received_at
    if event.event_type == "NewFileUpload":
        data = document.get("FileUploadEvent") or document.get("data")
        assert event.file_id == str(data.get("FileId") or data.get("fileId"))
    assert session.scalar(select(func.count()).select_from(Rejection)) == 0


NEW_FILE_UPLOADS = {
    "v3-push-newfileupload.json": dict(
        format="v3", file_id="5285890784273533167",
        media_url="http://125676836723.vod2.myqcloud.com/xxx/xxx/q1BORBPQH1IA.mp4",
        source_type="Upload", source_context="", procedure_task_id="", review_audio_video_task_id="",
        media_name="Animal World", media_type="mp4", storage_region="ap-chongqing", class_id=0,
        media_created_at=datetime(2019, 1, 9, 16, 36, 22, tzinfo=timezone.utc)),
    "v3-push-newfileupload-intl2024.json": dict(
        format="v3", file_id="5285890784273533167", source_type="Upload", storage_region="ap-guangzhou-2",
        review_audio_video_task_id=None, media_type="mp4"),
    "v2-newfileupload.json": dict(
        format="v2", file_id="5285890784273533167",
        media_url="http://125676836723.vod2.myqcloud.com/xxx/xxx/f0.flv", source_type="Record",
        source_context="rtmp://54xx.livepush.myqcloud.com/live?bizid=54xx&record=mp4&xx",
        procedure_task_id="125676836723-mango-fa2fdf6a0f850d673be119cf51a7603a", media_name="Animal World",
        media_type=None, storage_region=None),
    "v2-newfileupload-with-metadata-archived.json": dict(
        format="v2", file_id="24961954183381008", size=38394819, duration=21.0, width=1280, height=720,
        status="0", media_url="http://251000333.vod2.myqcloud.com/6c0f1c00vodgzp251000333/cbdadd3d24961954183381008/f0.mp4"),
}


@pytest.mark.parametrize("name", NEW_FILE_UPLOADS)
def test_new_file_upload_samples_are_parsed_into_columns(client, session, name):
    assert client.post(URL, data=sample(name)).status_code == 200
    [event] = _events(session)
    assert event.event_type == "NewFileUpload"
    assert {column: getattr(event, column) for column in NEW_FILE_UPLOADS[name]} == NEW_FILE_UPLOADS[name]


def test_pulled_new_file_upload_keeps_its_event_handle(client, session):
    event_set = json.loads(sample("pull-events-response-newfileupload.json"))["Response"]["EventSet"]
    assert client.post(URL, data=json.dumps(event_set[0])).status_code == 200
    [event] = _events(session)
    assert (event.file_id, event.event_handle, event.storage_region) == (
        "5285890784273533167", "EventHandle.N", "ap-guangzhou-2")


def test_file_id_sent_as_a_number_is_stored_with_every_digit(client, session):
    body = b'{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":5285890784273533167}}'
    assert client.post(URL, data=body).status_code == 200
    assert _events(session)[0].file_id == "5285890784273533167"


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain", "application/x-www-form-urlencoded"])
def test_body_is_read_whatever_the_content_type(client, session, content_type):
    body = new_file_upload("42", source_context="order-42")
    response = client.post(URL, data=body, headers={"Content-Type": content_type} if content_type else {})
    assert response.status_code == 200
    [event] = _events(session)
    assert (event.source_context, event.body, event.content_type) == ("order-42", body, content_type)


def test_duplicate_delivery_returns_200_and_counts_it(client, session):
    body = sample("v3-push-newfileupload.json")
    for _ in range(3):
        response = client.post(URL, data=body)
        assert (response.status_code, response.get_json()) == (200, {})
    [event] = _events(session)
    assert event.delivery_count == 3
    assert event.last_seen_at > event.received_at


def test_v2_and_v3_callbacks_of_one_upload_are_both_kept(client, session):
    client.post(URL, data=sample("v3-push-newfileupload.json"))
    client.post(URL, data=sample("v2-newfileupload.json"))
    assert [(e.format, e.file_id) for e in _events(session)] == [
        ("v3", "5285890784273533167"), ("v2", "5285890784273533167")]


def test_concurrent_duplicates_across_instances_are_stored_once(app, database_url, tmp_path):
    # Two app instances (two engines, as two gunicorn workers or two hosts would have) and
    # several threads each deliver the same event at once: one row, every delivery counted.
    other = create_app({"RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path / "s2"),
                        "RECEIVER_SPOOL_DRAIN_INTERVAL": 0, "RECEIVER_DB_TIMEOUT_MS": 10000})
    body = new_file_upload("777", source_context="race")
    barrier = threading.Barrier(8)
    statuses = []

    def deliver(instance):
        client = instance.test_client()
        barrier.wait()
        statuses.append(client.post(URL, data=body).status_code)

    threads = [threading.Thread(target=deliver, args=(app if i % 2 else other,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    db.dispose(other)
    assert statuses == [200] * 8
    with db.session_factory(app)() as session:
        [event] = _events(session)
        assert event.delivery_count == 8
    assert not (tmp_path / "s2").exists() and not (tmp_path / "spool").exists()


BAD_REQUESTS = [
    (b"", 400, "invalid_json"),
    (b"<xml/>", 400, "invalid_json"),
    (b"\xff\xff", 400, "invalid_json"),
    (b"[1, 2]", 400, "not_an_object"),
    (b'{"foo": 1}', 422, "unknown_format"),
    (b'{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": null}}', 422, "invalid_event"),
    (b'{"version": "4.0", "eventType": "NewFileUpload", "data": {"fileId": ""}}', 422, "invalid_event"),
]


@pytest.mark.parametrize("body, status, reason", BAD_REQUESTS, ids=[r for _, _, r in BAD_REQUESTS])
def test_bad_input_gets_a_clear_error_and_is_recorded(client, session, body, status, reason):
    response = client.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == reason and error["message"]
    [rejection] = session.scalars(select(Rejection)).all()
    assert (rejection.reason, rejection.status_code, rejection.message) == (reason, status, error["message"])
    assert (rejection.body, rejection.body_size, rejection.method, rejection.path) == (body, len(body), "POST", URL)
    assert rejection.body_sha256 == hashlib.sha256(body).hexdigest()
    assert rejection.content_type == "application/json"
    assert _events(session) == []


def test_bodies_nested_near_the_recursion_limit_are_answered_and_recorded(client, session):
    # Python's JSON decoder gives up at the recursion limit; a body nested a few levels less
    # decodes, but hashing it (canonical_hash) went deeper still and answered 500 unrecorded.
    depths = range(900, 1100, 3)
    for depth in depths:
        body = ('{"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": '
                '{"TaskId": "t-%d", "Deep": %s}}' % (depth, "[" * depth + "]" * depth))
        response = client.post("/callbacks/vod", data=body, content_type="application/json")
        assert response.status_code in (200, 400), (depth, response.get_json())
        if response.status_code == 400:
            assert response.get_json()["error"]["code"] == "invalid_json"
    stored = session.scalar(select(func.count()).select_from(Event))
    assert stored + session.scalar(select(func.count()).select_from(Rejection)) == len(depths)
    assert 0 < stored < len(depths)


def test_body_over_the_limit_is_refused_413_and_recorded(app, session):
    app.config["RECEIVER_MAX_BODY_BYTES"] = 1000
    body = new_file_upload(source_context="x" * 2000)
    response = app.test_client().post(URL, data=body)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "body_too_large"
    [rejection] = session.scalars(select(Rejection)).all()
    assert (rejection.reason, rejection.body_truncated, rejection.body) == ("body_too_large", True, body[:1000])
    assert rejection.details == {"limit": 1000, "content_length": len(body)}


def test_headers_are_kept_with_credentials_redacted(client, session):
    client.post(URL, data=sample("v3-push-newfileupload.json"),
                headers={"Authorization": "Bearer s3cret", "X-Api-Key": "k3y", "X-Trace": "t-1"})
    headers = _events(session)[0].headers
    assert headers["Authorization"] == headers["X-Api-Key"] == "[redacted]"
    assert headers["X-Trace"] == "t-1"
    assert "s3cret" not in json.dumps(headers) and "k3y" not in json.dumps(headers)


@pytest.mark.parametrize("proxies, expected", [(0, "127.0.0.1"), (1, "10.0.0.2"), (2, "203.0.113.9")])
def test_remote_address_is_read_through_the_trusted_proxies(database_url, tmp_path, proxies, expected):
    app = create_app({"RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path),
                      "RECEIVER_SPOOL_DRAIN_INTERVAL": 0, "RECEIVER_TRUSTED_PROXIES": proxies})
    body = new_file_upload(f"proxy-{proxies}")
    app.test_client().post(URL, data=body, headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.9, 10.0.0.2"})
    with db.session_factory(app)() as session:
        event = session.scalars(select(Event).where(Event.file_id == f"proxy-{proxies}")).one()
        assert event.remote_addr == expected
        session.delete(event)
        session.commit()
    db.dispose(app)


def test_only_post_is_allowed(client):
    response = client.get(URL)
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_body_timeout_that_cannot_work_stops_the_start(monkeypatch, tmp_path, value):
    monkeypatch.setenv("RECEIVER_BODY_TIMEOUT", value)
    with pytest.raises(RuntimeError, match=r"RECEIVER_BODY_TIMEOUT=.*: must be a number of seconds above 0"):
        create_app({"RECEIVER_SPOOL_DIR": str(tmp_path)})


def test_the_body_timeout_is_read_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RECEIVER_BODY_TIMEOUT", "0.5")
    app = create_app({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
                      "RECEIVER_SPOOL_DIR": str(tmp_path)})
    assert app.config["RECEIVER_BODY_TIMEOUT"] == 0.5
    db.dispose(app)
