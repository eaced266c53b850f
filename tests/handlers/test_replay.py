"""`vod-receiver replay`: select stored events by filters and state, preview, run their handlers
again or re-POST their exact bytes elsewhere, and record every replay."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from factories import T0, deliver, new_file_upload, upload
from sqlalchemy import select, update

from receiver import db, handlers, store
from receiver.events import Refusal
from receiver.handlers import replay, worker
from receiver.models import Event, HandlerAttempt, HandlerState, Replay, ReplayItem

STAGING_TOKEN = "staging-token-0123456789"


@pytest.fixture
def registry():
    """The default registry (the one `vod-receiver replay` runs), emptied around the test."""
    handlers.registry.clear()
    yield handlers.registry
    handlers.registry.clear()


@pytest.fixture
def flaky(registry):
    """A NewFileUpload handler that fails for the FileIds in `flaky.failing`."""
    class Flaky:
        failing = set()
        seen = []

    @registry.on("NewFileUpload")
    def remember(event):
        if event.file_id in Flaky.failing:
            raise RuntimeError(f"cannot handle {event.file_id}")
        Flaky.seen.append(event.file_id)

    return Flaky


def _attempts(session, event_id):
    return session.execute(select(HandlerAttempt.outcome, HandlerAttempt.reason)
                           .where(HandlerAttempt.event_id == event_id)
                           .order_by(HandlerAttempt.id)).all()


def _state(session, event_id):
    return session.scalar(select(HandlerState.state).where(HandlerState.event_id == event_id))


def test_a_dead_event_replayed_after_the_fix_is_processed_with_a_new_attempt(
        app, runner, session, flaky):
    app.config["RECEIVER_HANDLER_MAX_ATTEMPTS"] = 1
    flaky.failing = {"f1"}
    event_id = upload(app, 1).id
    assert worker.process_event(app, event_id) == "dead"
    flaky.failing = set()  # the fix

    result = runner.invoke(args=["replay", "--state", "dead", "--reason", "bug 12 fixed", "--yes"])

    assert result.exit_code == 0, result.output
    [done] = session.scalars(select(Replay)).all()
    assert result.output.splitlines() == [
        "1 event selected; target: handlers", f"replay {done.id}: processed 1"]
    assert flaky.seen == ["f1"]
    assert _state(session, event_id) == "processed"
    assert _attempts(session, event_id) == [("failed", None), ("succeeded", f"replay {done.id}")]
    assert (done.reason, done.origin, done.subject, done.target) == (
        "bug 12 fixed", "cli", "events", "handlers")
    assert done.selection == {"state": "dead"} and done.selected == 1
    assert done.outcomes == {"processed": 1} and done.finished_at is not None
    assert [(i.row_id, i.outcome, i.detail) for i in session.scalars(select(ReplayItem))] == [
        (event_id, "processed", None)]


def test_a_replay_whose_handler_still_fails_says_so_and_exits_1(app, runner, session, flaky):
    flaky.failing = {"f1"}
    failing, fine = upload(app, 1).id, upload(app, 2).id
    result = runner.invoke(args=["replay", "--id", str(failing), "--id", str(fine), "--yes"])
    assert result.exit_code == 1
    assert f"  {failing}: failed: RuntimeError: cannot handle f1" in result.output
    assert result.output.splitlines()[-1].endswith(": failed 1, processed 1")
    assert flaky.seen == ["f2"] and _state(session, fine) == "processed"


def test_replay_selects_by_the_admin_filters_and_the_processing_state(app, session, flaky):
    app.config["RECEIVER_HANDLER_MAX_ATTEMPTS"] = 2
    flaky.failing = {"f1", "f2", "f3"}
    ids = [upload(app, n, source_context=f"order-{n}" if n < 5 else "other").id
           for n in range(1, 6)]
    for event_id in ids:
        worker.process_event(app, event_id)
    worker.process_event(app, ids[0])  # f1's second failure: dead
    assert [_state(session, i) for i in ids] == ["dead", "failed", "failed", "processed", "processed"]

    def select_ids(filters=None, state=None):
        return replay.Selection("events", filters or {}, state).row_ids(session)

    assert select_ids(state="failed") == ids[1:3]  # oldest first
    assert select_ids({"file_id": "f3"}, "failed") == [ids[2]]
    assert select_ids({"source_context_prefix": "order-"}, "processed") == [ids[3]]
    assert select_ids({"source_context_prefix": "order-"}) == ids[:4]
    assert select_ids({"received_after": T0.replace(minute=3)}) == ids[2:]
    assert select_ids(state="dead") == [ids[0]]
    assert select_ids(state="pending") == []


def test_the_cli_counts_the_selection_and_asks_before_acting(app, runner, session, flaky):
    for n in (1, 2, 3):
        upload(app, n)
    declined = runner.invoke(args=["replay", "--file-id", "f2"], input="n\n")
    assert declined.exit_code == 1
    assert declined.output.startswith("1 event selected; target: handlers\n"
                                      "Replay 1 event to handlers? [y/N]")
    assert flaky.seen == [] and session.scalars(select(Replay)).all() == []
    accepted = runner.invoke(args=["replay", "--file-id", "f2"], input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert flaky.seen == ["f2"]
    nothing = runner.invoke(args=["replay", "--file-id", "f9", "--yes"])
    assert (nothing.exit_code, nothing.output) == (0, "no events match\n")


def test_a_dry_run_shows_what_today_s_parser_makes_of_the_bytes_and_changes_nothing(
        app, runner, session, flaky):
    same, stale, broken = (upload(app, n).id for n in (1, 2, 3))
    # As if stored by an older parser: a column it filled differently, bytes it took.
    with session.begin():
        session.execute(update(Event).where(Event.id == stale).values(source_context="old"))
        session.execute(update(Event).where(Event.id == broken).values(body=b"{}"))
    before = session.execute(select(Event).order_by(Event.id)).scalars().all()
    before = [(e.id, e.source_context, e.body) for e in before]
    session.expire_all()

    result = runner.invoke(args=["replay", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "3 events selected; target: handlers",
        f"  {stale} NewFileUpload: source_context 'old' -> 'order-2'",
        f"  {broken} NewFileUpload: refused today: unknown_format: Not a VOD callback: expected "
        "'EventType' (v3) or 'version' and 'eventType' (legacy v2).",
        "dry run: 2 of 3 would parse differently today; nothing was done",
    ]
    after = [(e.id, e.source_context, e.body) for e in session.scalars(select(Event).order_by(Event.id))]
    assert after == before and same in [row[0] for row in after]
    assert flaky.seen == []
    assert session.scalars(select(Replay)).all() == []
    assert session.scalars(select(HandlerState)).all() == []
    assert session.scalars(select(HandlerAttempt)).all() == []


def test_rejections_share_the_selection_and_the_dry_run(app, session):
    # What `rejections reparse` builds on: the same Selection and preview, on the other table.
    deliver(app, b"[1]", received_at=T0)
    today_valid = new_file_upload("f1")
    with db.session_factory(app)() as writer, writer.begin():  # refused by an older parser
        store.reject(writer.connection(), store.Delivery(body=today_valid, received_at=T0),
                     Refusal("invalid_event", "FileId was not a string then", status=422))
    selection = replay.Selection("rejections", {"reason": "invalid_event"})
    [refused_then] = selection.row_ids(session)
    assert replay.Selection("rejections").row_ids(session)[1] == refused_then
    [change] = replay.preview(app, "rejections", replay.Selection("rejections").row_ids(session))
    assert (change.id, change.label, change.refusal) == (refused_then, "invalid_event", None)
    assert change.fields == {"reason": ("invalid_event", None),
                             "event_type": (None, "NewFileUpload")}


def test_queue_marks_the_selection_pending_for_the_worker(app, runner, session, flaky):
    app.config["RECEIVER_HANDLER_MAX_ATTEMPTS"] = 1
    flaky.failing = {"f1"}
    event_id = upload(app, 1).id
    worker.process_event(app, event_id)
    result = runner.invoke(args=["replay", "--state", "dead", "--queue", "--yes"])
    assert result.exit_code == 0, result.output
    assert result.output.endswith(": queued 1\n")
    state = session.get(HandlerState, event_id)
    assert (state.state, state.attempts, state.last_error) == ("pending", 0, None)
    assert flaky.seen == []  # the worker runs it, not the replay
    assert session.scalar(select(Replay.target)) == "queue"


# -- re-POSTing to another receiver ---------------------------------------------------------

class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver behind gunicorn

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((time.monotonic(), self.path, self.headers.get("Content-Type"),
                                     body))
        answer = b"{}" if self.server.status == 200 else b'{"error": {"code": "token_invalid"}}'
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def staging():
    """A real HTTP listener on a free local port that records each POST it gets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads = True
    server.received, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}/callbacks/vod/{STAGING_TOKEN}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _post_callbacks(client):
    # Through the callback URL, so each keeps the Content-Type it arrived with.
    bodies = [(new_file_upload(f"f{n}", source_context=f"訂單-{n}"), ctype)
              for n, ctype in ((1, "application/json"), (2, "text/plain; charset=utf-8"),
                               (3, None))]
    for body, ctype in bodies:
        assert client.post("/callbacks/vod", data=body, content_type=ctype).status_code == 200
    return bodies


def test_to_url_re_posts_the_exact_bytes_with_their_content_type_at_the_rate(
        app, client, runner, session, staging):
    bodies = _post_callbacks(client)
    result = runner.invoke(args=["replay", "--to", staging.url, "--rate", "10/s", "--yes",
                                 "--reason", "staging check"])
    assert result.exit_code == 0, result.output
    assert [(path, ctype, body) for _t, path, ctype, body in staging.received] == [
        (f"/callbacks/vod/{STAGING_TOKEN}", ctype, body) for body, ctype in bodies]
    times = [t for t, *_rest in staging.received]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 3 callbacks at 10/s are sent 0.1 s apart (the first arrives a little later than sent: it
    # opens the connection); unpaced, all 3 would arrive within milliseconds.
    assert times[-1] - times[0] >= 0.15 and min(gaps) >= 0.05
    done = session.scalars(select(Replay)).one()
    assert done.outcomes == {"sent": 3} and done.reason == "staging check"
    # The staging receiver's URL token stays out of the record.
    assert STAGING_TOKEN not in done.target and done.target.startswith("http://127.0.0.1:")
    assert not any(STAGING_TOKEN in line for line in result.output.splitlines())


def test_to_url_records_what_the_other_end_refused_and_exits_1(app, client, runner, session, staging):
    _post_callbacks(client)
    staging.status = 401
    result = runner.invoke(args=["replay", "--to", staging.url, "--yes"])
    assert result.exit_code == 1
    assert len(staging.received) == 3
    assert session.scalar(select(Replay.outcomes)) == {"http_error": 3}
    assert '401 {"error": {"code": "token_invalid"}}' in result.output


def test_to_url_records_an_unreachable_receiver(app, runner, session):
    upload(app, 1)
    result = runner.invoke(args=["replay", "--to", "http://127.0.0.1:9/callbacks/vod", "--yes"])
    assert result.exit_code == 1
    assert session.scalar(select(Replay.outcomes)) == {"unreachable": 1}
    assert "ConnectionRefusedError" in result.output


@pytest.mark.parametrize("args, message", [
    (["--rate", "5/s"], "--rate applies to --to only"),
    (["--to", "ftp://staging/callbacks/vod"], "--to must be an http:// or https:// URL"),
    (["--to", "http://[::1/callbacks/vod"], "is not a URL (Invalid IPv6 URL)"),
    (["--to", "http://staging:99999/"], "is not a URL (Port out of range"),
    (["--to", "http://staging/", "--rate", "fast"], "'fast' is not a rate"),
    (["--to", "http://staging/", "--rate", "0"], "'0' is not a rate"),
    (["--to", "http://staging/", "--queue"], "--queue and --to are two different targets"),
    (["--state", "running"], "'running' is not one of"),
    (["--file-id", ""], "--file-id"),
])
def test_replay_refuses_bad_options_in_one_line(app, runner, args, message):
    upload(app, 1)
    result = runner.invoke(args=["replay", "--yes", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_replay_without_handlers_refuses_rather_than_settling_events_as_no_handler(
        app, runner, session, registry):
    upload(app, 1)
    result = runner.invoke(args=["replay", "--yes"])
    assert result.exit_code == 1
    assert result.output == ("Error: no handlers registered: set RECEIVER_HANDLERS, e.g. "
                             "NewFileUpload=myapp.hooks:video_uploaded\n")
    assert session.scalars(select(HandlerState)).all() == []


def test_the_pacer_spaces_calls_evenly_at_the_rate():
    now, slept = [100.0], []

    def sleep(seconds):
        slept.append(round(seconds, 6))
        now[0] += seconds

    pacer = replay.Pacer(4, clock=lambda: now[0], sleep=sleep)
    pacer.wait()
    pacer.wait()
    now[0] += 0.1  # work between calls counts towards the interval
    pacer.wait()
    now[0] += 1  # a pause: no burst to catch up afterwards
    pacer.wait()
    pacer.wait()
    assert slept == [0.25, 0.15, 0.25]
    unlimited = replay.Pacer(None, clock=lambda: now[0], sleep=sleep)
    unlimited.wait()
    unlimited.wait()
    assert slept == [0.25, 0.15, 0.25]
