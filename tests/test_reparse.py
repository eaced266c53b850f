"""Re-judging stored rejections: what yesterday's strict parser refused becomes an event, once;
refusals of the request (token, signature, address, size, method, path) never do."""
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from factories import T0, deliver, new_file_upload
from receiver import admin, db, queries, reparse, store
from receiver.events import Refusal
from receiver.models import Event, Rejection
from receiver.store import Delivery

# A NewFileUpload whose CreateTime is a Unix number: refused as invalid_event before issue 12.
ODD = json.loads(new_file_upload("f-odd", source_context="order-7"))
ODD["FileUploadEvent"]["MediaBasicInfo"]["CreateTime"] = 1546000000
ODD_BODY = json.dumps(ODD).encode()
HEADERS = {"Content-Type": "application/json", "X-Trace": "t-7"}


def _refused(app, body, reason="invalid_event", received_at=T0, status=422, **delivery):
    """Record `body` as a rejection, as an older parser (or a request check) refused it."""
    delivery = Delivery(body=body, received_at=received_at, remote_addr="10.1.2.3",
                        headers=HEADERS, **delivery)
    with db.session_factory(app)() as session, session.begin():
        return store.reject(session.connection(), delivery, Refusal(reason, "refused", status))


def _rows(app, model):
    with db.session_factory(app)() as session:
        return session.scalars(select(model).order_by(model.id)).all()


def test_a_dry_run_says_what_would_change_and_changes_nothing(app):
    _refused(app, ODD_BODY)
    _refused(app, b"not json", reason="invalid_json")

    report = reparse.reparse(app, dry_run=True)

    assert (report.considered, report.new, report.duplicates, report.still_refused) == (2, 1, 0, 1)
    assert [change.becomes_event for change in report.changes] == [True, False]
    assert _rows(app, Event) == []
    assert [r.resolved_at for r in _rows(app, Rejection)] == [None, None]


def test_a_refused_body_becomes_its_event_with_the_delivery_as_kept(app):
    rejection_id = _refused(app, ODD_BODY, received_at=T0 + timedelta(hours=2))

    report = reparse.reparse(app, dry_run=False)

    assert (report.new, report.duplicates) == (1, 0)
    [event] = _rows(app, Event)
    assert (event.file_id, event.source_context, event.media_created_at) == ("f-odd", "order-7", None)
    assert (event.body, event.received_at, event.channel) == (ODD_BODY, T0 + timedelta(hours=2), "push")
    assert (event.headers, event.remote_addr, event.delivery_count) == (HEADERS, "10.1.2.3", 1)
    assert [w["field"] for w in event.parse_warnings] == ["FileUploadEvent.MediaBasicInfo.CreateTime"]
    [rejection] = _rows(app, Rejection)
    assert (rejection.id, rejection.resolved_event_id) == (rejection_id, event.id)
    assert rejection.resolved_at is not None and rejection.reason == "invalid_event"


def test_a_second_run_changes_nothing_and_the_ledger_balances(app):
    _refused(app, ODD_BODY)
    reparse.reparse(app, dry_run=False)

    again = reparse.reparse(app, dry_run=False)

    assert (again.considered, again.to_events) == (0, 0)
    [event] = _rows(app, Event)
    assert event.delivery_count == 1
    with db.session_factory(app)() as session:
        ledger = queries.stats(session)["ledger"]
    assert ledger == {"deliveries": 1, "events": 1, "duplicates": 0, "rejections": 0, "resolved": 1}


def test_an_event_stored_since_counts_the_refused_delivery_as_a_duplicate(app):
    deliver(app, new_file_upload("f-odd"), received_at=T0 + timedelta(days=1))
    _refused(app, ODD_BODY)

    assert reparse.reparse(app, dry_run=True).duplicates == 1
    report = reparse.reparse(app, dry_run=False)

    assert (report.new, report.duplicates) == (0, 1)
    [event] = _rows(app, Event)
    assert event.delivery_count == 2 and event.parse_warnings is None  # the first delivery's
    assert _rows(app, Rejection)[0].resolved_event_id == event.id


@pytest.mark.parametrize("reason", ["token_missing", "token_invalid", "signature_missing",
                                    "signature_invalid", "signature_expired", "ip_not_allowed",
                                    "body_too_large", "method_not_allowed", "not_found"])
def test_a_refused_request_never_becomes_an_event_whatever_its_body(app, reason):
    rejection_id = _refused(app, new_file_upload("forged"), reason=reason, status=401)

    everything = reparse.reparse(app, dry_run=False)
    by_id = reparse.reparse(app, ids=[rejection_id], dry_run=False)

    assert everything.considered == by_id.considered == 0
    assert by_id.skipped == [(rejection_id, f"{reason}: not a judgement of the body, never re-judged")]
    with pytest.raises(reparse.NotRejudged):
        reparse.reparse(app, {"reason": reason}, dry_run=False)
    assert _rows(app, Event) == [] and _rows(app, Rejection)[0].resolved_at is None


def test_filters_and_ids_choose_what_is_re_judged(app):
    early = _refused(app, new_file_upload("a"), received_at=T0)
    late = _refused(app, new_file_upload("b"), received_at=T0 + timedelta(days=1))
    broken = _refused(app, new_file_upload("c"), reason="store_failed", status=500)

    assert [c.rejection_id for c in reparse.reparse(app, {"received_after": T0 + timedelta(hours=1)}).changes] == [late]
    assert [c.rejection_id for c in reparse.reparse(app, {"reason": "store_failed"}).changes] == [broken]
    chosen = reparse.reparse(app, ids=[early, 999999, 2**70], dry_run=False)
    assert [c.rejection_id for c in chosen.changes] == [early]
    assert chosen.skipped == [(999999, "no rejection with this id"), (2**70, "no rejection with this id")]
    assert [e.file_id for e in _rows(app, Event)] == ["a"]


def test_only_what_was_previewed_is_stored(app):
    _refused(app, new_file_upload("a"))
    plan = reparse.reparse(app)
    _refused(app, new_file_upload("b"))  # arrives between the preview and the confirmation

    reparse.reparse(app, dry_run=False, through_id=plan.through_id)

    assert [e.file_id for e in _rows(app, Event)] == ["a"]


def test_cli_shows_the_change_and_asks_before_storing(app, runner):
    rejection_id = _refused(app, ODD_BODY)
    _refused(app, b"[1]", reason="not_an_object", status=400)

    dry = runner.invoke(args=["rejections", "reparse", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("2 refused bodies re-judged: 1 become events (1 new, 0 duplicates")
    assert "NewFileUpload f-odd (new), 1 parse warning(s)" in dry.output
    assert "still refused: not_an_object" in dry.output

    declined = runner.invoke(args=["rejections", "reparse"], input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert _rows(app, Event) == []

    accepted = runner.invoke(args=["rejections", "reparse"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "stored 1 as events (1 new, 0 duplicates); 1 rejections resolved" in accepted.output
    assert [e.file_id for e in _rows(app, Event)] == ["f-odd"]

    shown = json.loads(runner.invoke(args=["rejections", "show", str(rejection_id), "--json"]).output)
    assert shown["resolved_event_id"] == _rows(app, Event)[0].id and shown["resolved_at"]
    event = runner.invoke(args=["events", "show", str(shown["resolved_event_id"])]).output
    assert "parse warnings" in event and "FileUploadEvent.MediaBasicInfo.CreateTime" in event


@pytest.mark.parametrize("args, message", [
    (["--reason", "token_invalid"], "--reason: 'token_invalid' refusals are never re-judged"),
    (["--received-after", "yesterday"], "--received-after"),
    (["--yes", "x"], "'x' is not a valid integer"),
])
def test_cli_refuses_bad_options_in_one_line(runner, args, message):
    result = runner.invoke(args=["rejections", "reparse", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_cli_with_yes_stores_without_asking(app, runner):
    _refused(app, ODD_BODY)
    result = runner.invoke(args=["rejections", "reparse", "--yes"])
    assert result.exit_code == 0, result.output
    with db.session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1


def test_admin_api_shows_resolution_and_warnings(app):
    app.config["RECEIVER_ADMIN_TOKENS"] = ["t"]
    admin.init_app(app)
    rejection_id = _refused(app, ODD_BODY)
    reparse.reparse(app, dry_run=False)
    client, auth = app.test_client(), {"Authorization": "Bearer t"}

    rejection = client.get(f"/admin/api/v1/rejections/{rejection_id}", headers=auth).json
    listed = client.get("/admin/api/v1/rejections", headers=auth).json["items"][0]
    event = client.get(f"/admin/api/v1/events/{rejection['resolved_event_id']}", headers=auth).json

    assert listed["resolved_event_id"] == rejection["resolved_event_id"] and listed["resolved_at"]
    assert event["parse_warnings"] == [{"field": "FileUploadEvent.MediaBasicInfo.CreateTime",
                                        "problem": "Not a valid datetime.", "stored": "nothing"}]
