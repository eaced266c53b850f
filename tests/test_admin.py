"""The read-only admin API: tokens, filters, paging, detail views, stats and errors."""
import base64
import hashlib
from datetime import timedelta

import pytest
from factories import T0, deliver, new_file_upload, upload

from receiver import admin, create_app, db, spool
from receiver.store import Delivery

TOKEN = "test-admin-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = "/admin/api/v1"


@pytest.fixture
def app(app):
    app.config["RECEIVER_ADMIN_TOKENS"] = [TOKEN, "test-admin-token-2"]
    admin.init_app(app)
    return app


def _get(client, path, **params):
    return client.get(f"{API}{path}", query_string=params, headers=AUTH)


@pytest.mark.parametrize("tokens", ["", " , ", []])
def test_admin_api_does_not_exist_without_tokens(database_url, tmp_path, tokens):
    app = create_app({"RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path),
                      "RECEIVER_ADMIN_TOKENS": tokens})
    client = app.test_client()
    for path in ("/events", "/events/1", "/rejections", "/stats", "/openapi.json"):
        response = client.get(f"{API}{path}", headers=AUTH)
        assert response.status_code == 404
        assert response.json["error"]["code"] == "not_found"
    db.dispose(app)


def test_tokens_from_a_comma_separated_string_each_work(database_url, tmp_path):
    app = create_app({"RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path),
                      "RECEIVER_ADMIN_TOKENS": "old-token, new-token"})
    client = app.test_client()
    for token, status in (("old-token", 200), ("new-token", 200), ("old-token, new-token", 401),
                          ("o", 401)):
        response = client.get(f"{API}/stats", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == status
    db.dispose(app)


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
    f"Basic {base64.b64encode(f'admin:{TOKEN}'.encode()).decode()}", TOKEN, f"Token {TOKEN}",
])
@pytest.mark.parametrize("path", ["/events", "/events/1", "/rejections", "/rejections/1", "/stats"])
def test_a_missing_or_wrong_token_gets_401(client, path, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get(f"{API}{path}", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json["error"]["code"] == "unauthorized"
    assert TOKEN not in response.get_data(as_text=True)


def test_either_configured_token_is_accepted(client):
    for token in (TOKEN, "test-admin-token-2"):
        assert client.get(f"{API}/stats", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_is_admin_token_compares_whole_tokens():
    assert admin.is_admin_token("b", ["a", "b"])
    assert not admin.is_admin_token("", ["a"])
    assert not admin.is_admin_token("ab", ["a", "b"])
    assert not admin.is_admin_token("é", ["e"])


def test_find_an_upload_by_source_context_and_read_its_body(app, client):
    upload(app, 1)
    body = new_file_upload("f42", source_context="order-42", procedure_task_id="proc-42")
    stored = deliver(app, body, received_at=T0 + timedelta(hours=1))
    deliver(app, body, received_at=T0 + timedelta(hours=2))  # VOD re-sent it

    listing = _get(client, "/events", source_context="order-42")
    assert listing.status_code == 200
    assert listing.headers["Cache-Control"] == "no-store"
    [item] = listing.json["items"]
    assert item["id"] == stored.id and item["file_id"] == "f42" and item["delivery_count"] == 2
    assert item["procedure_task_id"] == "proc-42" and listing.json["next_cursor"] is None

    shown = _get(client, f"/events/{stored.id}").json
    assert shown["body"].encode() == body and shown["body_encoding"] == "utf-8"
    assert shown["body_sha256"] == hashlib.sha256(body).hexdigest() == hashlib.sha256(
        shown["body"].encode()).hexdigest()
    assert shown["received_at"] == (T0 + timedelta(hours=1)).isoformat()
    assert shown["last_seen_at"] == (T0 + timedelta(hours=2)).isoformat()
    assert shown["source_context"] == "order-42" and shown["media_name"] == "Animal World"
    assert shown["headers"] == {"Content-Type": "application/json"}


def test_headers_of_a_pushed_callback_are_shown_redacted(app, client):
    client.post("/callbacks/vod", data=new_file_upload("f7"), content_type="application/json",
                headers={"Authorization": "Bearer vod-secret", "X-Forwarded-For": "10.0.0.1"})
    [item] = _get(client, "/events", file_id="f7").json["items"]
    shown = _get(client, f"/events/{item['id']}")
    assert shown.json["headers"]["Authorization"] == "[redacted]"
    assert shown.json["headers"]["X-Forwarded-For"] == "10.0.0.1"
    assert "vod-secret" not in shown.get_data(as_text=True)


def test_rejections_say_why_and_keep_bytes_that_are_not_utf8(app, client):
    deliver(app, b"\xff\xfe not json")
    client.post("/callbacks/vod", data=b'{"hello": 1}', content_type="application/json")
    listing = _get(client, "/rejections").json["items"]
    assert [r["reason"] for r in listing] == ["unknown_format", "invalid_json"]
    unknown = _get(client, f"/rejections/{listing[0]['id']}").json
    assert unknown["status_code"] == 422 and unknown["details"] == {"keys": ["hello"]}
    assert unknown["method"] == "POST" and unknown["path"] == "/callbacks/vod"
    invalid = _get(client, f"/rejections/{listing[1]['id']}").json
    assert invalid["body_encoding"] == "base64"
    assert base64.b64decode(invalid["body"]) == b"\xff\xfe not json"
    assert invalid["body_sha256"] == hashlib.sha256(b"\xff\xfe not json").hexdigest()
    assert "UTF-8" in invalid["message"]
    only = _get(client, "/rejections", reason="invalid_json").json["items"]
    assert [r["id"] for r in only] == [listing[1]["id"]]


def test_paging_through_a_listing_returns_each_event_once(app, client):
    for n in range(23):
        upload(app, n, minutes=n // 4)  # runs of equal received_at
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 5, "event_type": "NewFileUpload"} | ({"cursor": cursor} if cursor else {})
        response = _get(client, "/events", **params).json
        seen += [item["file_id"] for item in response["items"]]
        pages += 1
        cursor = response["next_cursor"]
        if cursor is None:
            break
    assert pages == 5 and len(seen) == len(set(seen)) == 23
    assert seen == sorted(seen, key=lambda f: (int(f[1:]) // 4, int(f[1:])), reverse=True)


@pytest.mark.parametrize("path", ["/events/999999", "/rejections/999999", "/events/0",
                                  f"/events/{2**63}", "/events/-1", "/events/abc"])
def test_unknown_ids_get_404_in_the_error_shape(client, path):
    response = client.get(f"{API}{path}", headers=AUTH)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("path, params, parameter", [
    ("/events", {"limit": "0"}, "limit"),
    ("/events", {"limit": "501"}, "limit"),
    ("/events", {"limit": "ten"}, "limit"),
    ("/events", {"format": "v4"}, "format"),
    ("/events", {"channel": "email"}, "channel"),
    ("/events", {"received_after": "yesterday"}, "received_after"),
    ("/events", {"received_before": "2026-13-01T00:00:00Z"}, "received_before"),
    ("/events", {"cursor": "garbage"}, "cursor"),
    ("/events", {"file_id": ""}, "file_id"),
    ("/events", {"file_id": "x" * 65}, "file_id"),
    ("/events", {"source_context": "a\x00b"}, "source_context"),
    ("/events", {"source_context_prefix": ""}, "source_context_prefix"),
    ("/events", {"reason": "invalid_json"}, "reason"),
    ("/events", {"fileId": "1"}, "fileId"),
    ("/events", {"event_type": ["A", "B"]}, "event_type"),
    ("/rejections", {"file_id": "1"}, "file_id"),
    ("/rejections", {"reason": "x" * 65}, "reason"),
    ("/rejections", {"limit": "-1"}, "limit"),
])
def test_bad_query_parameters_get_400_naming_the_parameter(client, path, params, parameter):
    response = client.get(f"{API}{path}", query_string=params, headers=AUTH)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_parameter"
    assert repr(parameter) in error["message"]
    assert list(error["details"]) == [parameter]


def test_stats_report_the_ledger_and_the_spool_depth(app, client):
    upload(app, 1)
    upload(app, 1)
    deliver(app, b"")
    spool.write(app.config["RECEIVER_SPOOL_DIR"], Delivery(body=b"{}"))
    stats = _get(client, "/stats").json
    assert stats["ledger"] == {"deliveries": 3, "events": 1, "duplicates": 1, "rejections": 1,
                              "resolved": 0}
    assert stats["spool_depth"] == 1
    assert stats["by_event_type"] == [{"event_type": "NewFileUpload", "events": 1, "duplicates": 1}]
    assert stats["rejections_by_reason"] == [{"reason": "invalid_json", "rejections": 1}]
    assert stats["by_day"] == [{"day": "2026-11-01", "events": 1, "duplicates": 1, "rejections": 1}]


def test_openapi_document_needs_no_token_and_describes_every_endpoint(client):
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    document = response.json
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {f"{API}{p}" for p in (
        "/events", "/events/{event_id}", "/rejections", "/rejections/{rejection_id}", "/stats",
        "/events/replay", "/events/{event_id}/replay", "/uploads", "/uploads/{upload_id}")}
    names = {p["name"] for p in document["paths"][f"{API}/events"]["get"]["parameters"]}
    assert {"file_id", "source_context", "source_context_prefix", "procedure_task_id", "cursor",
            "limit", "received_after", "received_before", "format", "channel"} <= names


def test_admin_api_writes_only_replays(client):
    response = client.post(f"{API}/events", headers=AUTH)
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"
