"""The admin API's writes: replaying one event, or every event a filter and state select."""
import pytest
from factories import upload
from sqlalchemy import select, update

from receiver import admin, create_app, db, handlers
from receiver.handlers import worker
from receiver.models import Event, HandlerAttempt, HandlerState, Replay, ReplayItem

TOKEN = "test-admin-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API = "/admin/api/v1"


@pytest.fixture
def app(app):
    app.config["RECEIVER_ADMIN_TOKENS"] = [TOKEN]
    app.config["RECEIVER_HANDLER_MAX_ATTEMPTS"] = 1
    admin.init_app(app)
    return app


@pytest.fixture
def fails_for():
    """A NewFileUpload handler on the default registry, failing for the FileIds in the set."""
    failing = set()
    handlers.registry.clear()

    @handlers.registry.on("NewFileUpload")
    def check(event):
        if event.file_id in failing:
            raise RuntimeError(f"cannot handle {event.file_id}")

    yield failing
    handlers.registry.clear()


def _dead(app, fails_for, *numbers):
    fails_for.update(f"f{n}" for n in numbers)
    ids = [upload(app, n).id for n in numbers]
    for event_id in ids:
        assert worker.process_event(app, event_id) == "dead"
    fails_for.clear()  # the fix
    return ids


@pytest.mark.parametrize("path", ["/events/replay", "/events/1/replay"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_replays_need_an_admin_token(client, path, headers):
    response = client.post(f"{API}{path}", json={"reason": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("path", ["/events/replay", "/events/1/replay"])
def test_replays_do_not_exist_when_the_admin_api_is_off(database_url, tmp_path, path):
    app = create_app({"RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path)})
    response = app.test_client().post(f"{API}{path}", json={"reason": "x"}, headers=AUTH)
    assert response.status_code == 404
    db.dispose(app)


def test_replaying_a_dead_event_queues_it_and_the_worker_then_processes_it(
        app, client, session, fails_for):
    [event_id] = _dead(app, fails_for, 1)
    response = client.post(f"{API}/events/{event_id}/replay", json={"reason": "bug 12 fixed"},
                           headers=AUTH)
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["count"], body["dry_run"], body["changes"]) == (1, False, [])
    record = body["replay"]
    assert (record["reason"], record["origin"], record["target"], record["selected"]) == (
        "bug 12 fixed", "admin-api", "queue", 1)
    assert record["selection"] == {"ids": [event_id]} and record["outcomes"] == {"queued": 1}
    state = session.get(HandlerState, event_id)
    assert (state.state, state.attempts) == ("pending", 0)

    assert worker.process_event(app, event_id) == "processed"  # as `vod-receiver work` would
    outcomes = session.scalars(select(HandlerAttempt.outcome).where(
        HandlerAttempt.event_id == event_id).order_by(HandlerAttempt.id)).all()
    assert outcomes == ["failed", "succeeded"]
    assert session.scalars(select(ReplayItem.row_id)).all() == [event_id]


def test_replaying_an_unknown_event_is_404(app, client):
    response = client.post(f"{API}/events/12345/replay", json={"reason": "x"}, headers=AUTH)
    assert response.status_code == 404
    assert response.json["error"]["message"] == "No event with this id."


def test_bulk_replay_by_filter_and_state_answers_the_count(app, client, session, fails_for):
    dead = _dead(app, fails_for, 1, 2, 3)
    upload(app, 4)
    response = client.post(f"{API}/events/replay", headers=AUTH, json={
        "state": "dead", "source_context_prefix": "order-", "received_after": "2026-11-01T12:02:00Z",
        "reason": "bug 12 fixed"})
    assert response.status_code == 200, response.json
    assert response.json["count"] == 2
    record = session.scalars(select(Replay)).one()
    assert record.selection == {"received_after": "2026-11-01T12:02:00+00:00",
                                "source_context_prefix": "order-", "state": "dead"}
    assert record.outcomes == {"queued": 2} and record.finished_at is not None
    states = dict(session.execute(select(HandlerState.event_id, HandlerState.state)).all())
    assert [states[i] for i in dead] == ["dead", "pending", "pending"]


def test_a_bulk_dry_run_answers_the_changes_and_changes_nothing(app, client, session, fails_for):
    ids = _dead(app, fails_for, 1, 2)
    with session.begin():
        session.execute(update(Event).where(Event.id == ids[1]).values(file_id="old", size=1))
    response = client.post(f"{API}/events/replay", headers=AUTH,
                           json={"state": "dead", "reason": "check", "dry_run": True})
    assert response.status_code == 200, response.json
    assert response.json == {"count": 2, "dry_run": True, "replay": None, "changes": [{
        "id": ids[1], "label": "NewFileUpload", "refusal": None,
        "fields": {"file_id": {"stored": "old", "today": "f2"},
                   "size": {"stored": 1, "today": None}}}]}
    assert session.scalars(select(Replay)).all() == []
    assert set(session.scalars(select(HandlerState.state))) == {"dead"}


def test_a_bulk_replay_selecting_nothing_records_nothing(app, client, session):
    response = client.post(f"{API}/events/replay", headers=AUTH,
                           json={"file_id": "nope", "reason": "x"})
    assert response.json == {"count": 0, "dry_run": False, "replay": None, "changes": []}
    assert session.scalars(select(Replay)).all() == []


@pytest.mark.parametrize("body, code, name", [
    ({}, "invalid_parameter", "reason"),
    ({"reason": ""}, "invalid_parameter", "reason"),
    ({"reason": "x", "dry_run": "yes"}, "invalid_parameter", "dry_run"),
    ({"reason": "x", "dry_run": "false"}, "invalid_parameter", "dry_run"),
    ({"reason": "x", "state": "running"}, "invalid_parameter", "state"),
    ({"reason": "x", "limit": 5}, "invalid_parameter", "limit"),
    ({"reason": "x", "received_after": "last week"}, "invalid_parameter", "received_after"),
    ([1], "invalid_body", None),
    ("not json", "invalid_body", None),
])
def test_bad_replay_bodies_get_400_naming_the_field(app, client, session, body, code, name):
    upload(app, 1)
    if body == "not json":
        response = client.post(f"{API}/events/replay", data=b"{nope", headers=AUTH)
    else:
        response = client.post(f"{API}/events/replay", json=body, headers=AUTH)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == code
    if name is not None:
        assert list(error["details"]) == [name] and repr(name) in error["message"]
    assert session.scalars(select(Replay)).all() == []


def test_a_body_sent_as_curl_d_sends_it_is_read_as_json(app, client):
    upload(app, 1)
    response = client.post(f"{API}/events/replay", data='{"reason": "x", "dry_run": true}',
                           content_type="application/x-www-form-urlencoded", headers=AUTH)
    assert response.status_code == 200 and response.json["count"] == 1
