"""Blueprint: the operator page under /admin/ — server-rendered HTML over the same queries as the
admin API, with sign-in, and the replay and re-parse actions. No JavaScript.

Everything here is the blueprint's own (its hooks run for /admin/ pages only): the callback path
gains no hook, no session and no secret key.
"""
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from flask import (Blueprint, current_app, g, redirect, render_template, request, url_for)
from marshmallow import ValidationError
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError, NotFound

from .. import admin, admin_schemas as schemas, overview as overview_counts, queries, reparse
from ..db import get_session
from ..handlers import replay
from ..handlers.worker import linked_upload
from ..models import HandlerState, Replay
from . import format as fmt, signin

bp = Blueprint("web", __name__, url_prefix="/admin", template_folder="templates",
               static_folder="static")

# Above this many matching events the page refuses a bulk replay: the CLI shows progress and
# can be interrupted, a browser request cannot.
REPLAY_CAP = 10_000
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
UPLOAD_STATUSES = ("waiting", "notified", "failed", "started", "stored", "committed")
HANDLER_LIST_STATES = ("failed", "dead", "pending")
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
_OPEN = ("web.sign_in", "web.static")  # reachable without signing in


# Sign-in, sign-out, and what every page does first.

@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    """Sign in with an admin token; the session cookie lasts 12 hours."""
    target = _local(request.values.get("next"))
    if request.method == "GET":
        return render_template("signin.html", next=target)
    token = request.form.get("token", "")
    tokens = _tokens()
    if not token or not admin.is_admin_token(token, tokens):
        return render_template("signin.html", next=target, error="That token is not valid."), 401
    response = redirect(target, 303)
    response.set_cookie(signin.COOKIE, signin.open_session(tokens, token), max_age=signin.MAX_AGE,
                        path="/admin", secure=_https(), httponly=True, samesite="Strict")
    return response


@bp.post("/sign-out")
def sign_out():
    """Sign out: forget the session cookie."""
    response = redirect(url_for("web.sign_in"), 303)
    response.delete_cookie(signin.COOKIE, path="/admin", secure=_https(), httponly=True,
                           samesite="Strict")
    return response


@bp.before_request
def _signed_in():
    if request.endpoint in _OPEN:
        return None
    tokens = _tokens()
    g.web_sid = signin.session_id(tokens, request.cookies.get(signin.COOKIE))
    if request.method == "POST":
        if g.web_sid is None and request.endpoint == "web.sign_out":
            return None  # signed out already: nothing to protect
        # Before anything else: a form posted from another site carries no valid token.
        if not signin.csrf_ok(tokens, g.web_sid, request.form.get("csrf_token")):
            raise BadRequest("Missing or wrong CSRF token. Reload the page and try again.")
        return None
    if g.web_sid is None:
        query = request.query_string.decode("utf-8", "replace")  # raw bytes a client may send
        here = request.path + (f"?{query}" if query else "")
        return redirect(url_for("web.sign_in", next=here), 303)
    return None


@bp.after_request
def _headers(response):
    # Stored bodies and headers are attacker-controlled: nothing on these pages may run,
    # load from elsewhere, be framed or be cached.
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _helpers():
    sid = g.get("web_sid")
    return {"utc": fmt.utc, "ago": fmt.ago, "duration": fmt.duration, "body_text": fmt.body_text,
            "signed_in": sid is not None, "replay_states": replay.STATES,
            "handler_states": HANDLER_LIST_STATES, "upload_statuses": UPLOAD_STATUSES,
            "csrf_token": signin.csrf_token(_tokens(), sid) if sid else ""}


@bp.errorhandler(HTTPException)
def _error_page(exc):
    return render_template("error.html", status=exc.code, title=exc.name,
                           message=exc.description), exc.code


@bp.errorhandler(InternalServerError)
def _server_error_page(exc):
    return render_template("error.html", status=500, title="Internal Server Error",
                           message="The server could not complete the request."), 500


# The overview.

@bp.get("/")
def overview():
    """The overview: the ledger, the backlog, the spool, uploads waiting, and two charts."""
    data = overview_counts.summary(get_session(), current_app.config["RECEIVER_SPOOL_DIR"])
    return render_template("overview.html", data=data, chart_hours=_chart_hours(data["hours"]),
                           chart_days=_chart_days(data["days"]))


def _chart_hours(hours):
    return [{"label": row["start"].strftime("%H:00"), "title": row["start"].strftime("%Y-%m-%d %H:00 UTC"),
             "value": row["events"] + row["duplicates"] + row["rejections"], **row} for row in hours]


def _chart_days(days):
    return [{"label": row["day"].strftime("%d"), "title": row["day"].isoformat(),
             "value": row["events"] + row["duplicates"] + row["rejections"], **row} for row in days]


# Events.

@bp.get("/events")
def list_events():
    """Stored events, newest first, filtered like the admin API, one page at a time."""
    args = _args()
    try:
        filters, limit, cursor = _event_query(args)
        page = queries.list_events(get_session(), filters, limit, cursor)
    except _FilterError as exc:
        return render_template("events.html", args=args, error=str(exc), page=None), 400
    shown = {k: v for k, v in args.items() if k != "cursor"}
    replay_args = {k: v for k, v in shown.items() if k != "limit"}
    return render_template("events.html", args=args, page=page, error=None,
                           next_url=_next_url("web.list_events", shown, page.next_cursor),
                           replay_url=url_for("web.confirm_replay", **replay_args))


@bp.get("/events/<int:event_id>")
def show_event(event_id):
    """One event: fields, deliveries, headers, body, its upload, handler attempts, and replay."""
    return _event_page(event_id)


@bp.post("/events/<int:event_id>/replay")
def replay_event(event_id):
    """Queue one event for `vod-receiver work` to run its handlers again."""
    session = get_session()
    if queries.get_event(session, event_id) is None:
        raise NotFound("No event with this id.")
    try:
        reason = _reason()
    except _FilterError as exc:
        return _event_page(event_id, error=str(exc)), 400
    done = _queue(replay.Selection("events", ids=(event_id,)), reason)
    return redirect(url_for("web.show_event", event_id=event_id, queued=done.id), 303)


def _event_page(event_id, error=None):
    session = get_session()
    event = queries.get_event(session, event_id)
    if event is None:
        raise NotFound("No event with this id.")
    fields = schemas.event.dump(event)
    for name in ("body", "headers", "body_encoding"):
        fields.pop(name)
    queued = request.args.get("queued", type=int)
    return render_template(
        "event.html", event=event, fields=fields, error=error, queued=queued,
        upload=linked_upload(session, event) if event.event_type == "NewFileUpload" else None,
        state=session.get(HandlerState, event_id),
        attempts=queries.handler_attempts(session, event_id))


# Bulk replay.

@bp.get("/replay")
def confirm_replay():
    """Confirm a replay of every event the filters (and handler state) select."""
    args = _args()
    try:
        filters, state = _replay_selection(args)
    except _FilterError as exc:
        return render_template("replay_confirm.html", error=str(exc), count=None, args=args), 400
    count = queries.count_events(get_session(), filters, state, REPLAY_CAP)
    back = url_for("web.list_events", **{k: v for k, v in args.items() if k != "state"})
    return render_template("replay_confirm.html", error=None, count=count, cap=REPLAY_CAP,
                           args=args, hidden=_hidden(filters, state), events_url=back)


@bp.post("/replay")
def replay_events():
    """Queue every event the posted filters and state select; then show the replay."""
    form = {k: v for k, v in request.form.items() if v != "" and k not in ("csrf_token", "reason")}
    try:
        filters, state = _replay_selection(form)
        reason = _reason()
    except _FilterError as exc:
        raise BadRequest(str(exc)) from None
    session = get_session()
    count = queries.count_events(session, filters, state, REPLAY_CAP)
    if count > REPLAY_CAP:
        raise BadRequest(f"More than {REPLAY_CAP:,} events match: narrow the filter, or use "
                         "`vod-receiver replay --queue` for a selection this large.")
    if count == 0:
        raise BadRequest("No events match these filters: nothing was queued.")
    done = _queue(replay.Selection("events", filters, state), reason)
    return redirect(url_for("web.show_replay", replay_id=done.id), 303)


def _queue(selection, reason):
    # Exactly as the admin API's replay: queued for `vod-receiver work`, never run in this
    # process (it also answers VOD's callbacks, within 5 seconds).
    session = get_session()
    row_ids = selection.row_ids(session)
    session.close()  # ends the read: the queueing writes in sessions of its own
    app = current_app._get_current_object()
    return replay.run(app, selection, row_ids, replay.Queue(app), reason=reason, origin="web")


def _replay_selection(values):
    values = dict(values)
    state = values.pop("state", None)
    if state is not None and state not in replay.STATES:
        raise _FilterError(f"state: choose one of {', '.join(replay.STATES)}.")
    filters = _load(schemas.event_filters, _since(values))
    return filters, state


def _hidden(filters, state):
    # The selection as counted, to post back: `since` becomes the instant it meant.
    values = {name: value.isoformat() if isinstance(value, datetime) else value
              for name, value in filters.items()}
    if state is not None:
        values["state"] = state
    return values


# Replays.

@bp.get("/replays")
def list_replays():
    """Recent replays: who started them from where, why, what they selected, how they went."""
    before = request.args.get("before", type=int)
    rows = queries.list_replays(get_session(), queries.DEFAULT_LIMIT + 1, before)
    next_url = None
    if len(rows) > queries.DEFAULT_LIMIT:
        rows = rows[:queries.DEFAULT_LIMIT]
        next_url = url_for("web.list_replays", before=rows[-1].id)
    return render_template("replays.html", replays=rows, next_url=next_url)


@bp.get("/replays/<int:replay_id>")
def show_replay(replay_id):
    """One replay: its record, and the rows it acted on with their outcomes."""
    session = get_session()
    found = session.get(Replay, replay_id) if 0 < replay_id <= queries.MAX_ID else None
    if found is None:
        raise NotFound("No replay with this id.")
    return render_template("replay.html", replay=found,
                           items=queries.replay_items(session, replay_id),
                           failed=replay.failed_items(current_app, found, limit=100))


# Rejections.

@bp.get("/rejections")
def list_rejections():
    """Refused requests, newest first, by reason and time, one page at a time."""
    args = _args()
    try:
        filters, limit, cursor = _load(schemas.rejection_query, args)
        page = queries.list_rejections(get_session(), filters, limit, cursor)
    except _FilterError as exc:
        return render_template("rejections.html", args=args, error=str(exc), page=None), 400
    shown = {k: v for k, v in args.items() if k != "cursor"}
    return render_template("rejections.html", args=args, page=page, error=None,
                           next_url=_next_url("web.list_rejections", shown, page.next_cursor))


@bp.get("/rejections/<int:rejection_id>")
def show_rejection(rejection_id):
    """One refused request: why, its headers and exact body; re-parse it if it was the body."""
    return _rejection_page(rejection_id)


@bp.post("/rejections/<int:rejection_id>/reparse")
def reparse_rejection(rejection_id):
    """Re-judge one refused body with today's parser, storing it as an event if it parses."""
    rejection = queries.get_rejection(get_session(), rejection_id)
    if rejection is None:
        raise NotFound("No rejection with this id.")
    try:
        reason = _reason()
    except _FilterError as exc:
        return _rejection_page(rejection_id, error=str(exc)), 400
    if not _reparsable(rejection):
        return _rejection_page(rejection_id, error="This rejection cannot be re-parsed."), 400
    get_session().close()
    app = current_app._get_current_object()
    # Recorded like a replay of one rejection: who (origin web), why, and what became of it.
    selection = replay.Selection("rejections", ids=(rejection_id,))
    record = replay.start(app, selection, "reparse", 1, reason=reason, origin="web")
    report = reparse.reparse(app, ids=(rejection_id,), dry_run=False)
    done = replay.finish(app, record, {_reparse_outcome(report): 1})
    return redirect(url_for("web.show_rejection", rejection_id=rejection_id, reparsed=done.id), 303)


def _reparse_outcome(report):
    if report.skipped:
        return "skipped"
    if report.spooled:
        return "spooled"
    if report.new:
        return "stored"
    if report.duplicates:
        return "duplicate"
    return "still_refused"


def _reparsable(rejection):
    return (rejection.reason in reparse.REJUDGED_REASONS and rejection.resolved_at is None
            and not rejection.body_truncated)


def _rejection_page(rejection_id, error=None):
    session = get_session()
    rejection = queries.get_rejection(session, rejection_id)
    if rejection is None:
        raise NotFound("No rejection with this id.")
    reparsed_id = request.args.get("reparsed", type=int)
    reparsed = None
    if reparsed_id is not None and 0 < reparsed_id <= queries.MAX_ID:
        reparsed = session.get(Replay, reparsed_id)
    return render_template("rejection.html", rejection=rejection, error=error,
                           reparsable=_reparsable(rejection), reparsed=reparsed)


# Uploads.

@bp.get("/uploads")
def list_uploads():
    """Our uploads to VOD, newest first, by status and age, one page at a time."""
    args = _args()
    try:
        values = {k: v for k, v in args.items() if k != "status"}
        filters, limit, cursor = _load(schemas.upload_query, values)
        filters.update(_upload_status(args.get("status")))
        page = queries.list_uploads(get_session(), filters, limit, cursor)
    except _FilterError as exc:
        return render_template("uploads.html", args=args, error=str(exc), page=None), 400
    shown = {k: v for k, v in args.items() if k != "cursor"}
    items = [schemas.upload_data(upload, event_id) for upload, event_id in page.items]
    return render_template("uploads.html", args=args, page=page, items=items, error=None,
                           next_url=_next_url("web.list_uploads", shown, page.next_cursor))


def _upload_status(status):
    # A status as the list shows it (queries.upload_status): notified overrides the stored
    # state, so started/stored/committed mean "in that state and not notified yet".
    if status is None:
        return {}
    if status not in UPLOAD_STATUSES:
        raise _FilterError(f"status: choose one of {', '.join(UPLOAD_STATUSES)}.")
    if status == "waiting":
        return {"pending": True}
    if status == "notified":
        return {"notified": True}
    if status == "failed":
        return {"state": "failed"}
    return {"state": status, "notified": False}


@bp.get("/uploads/<int:upload_id>")
def show_upload(upload_id):
    """One upload: every step's time, VOD's answer or the error, and the event it caused."""
    found = queries.get_upload(get_session(), upload_id)
    if found is None:
        raise NotFound("No upload with this id.")
    upload, event = found
    return render_template("upload.html", upload=schemas.upload_data(upload, event=event),
                           event=event)


# Handlers.

@bp.get("/handlers")
def list_handlers():
    """Events whose handlers failed or died (or are pending), latest change first."""
    args = _args()
    state = args.get("state")
    try:
        if state is not None and state not in HANDLER_LIST_STATES:
            raise _FilterError(f"state: choose one of {', '.join(HANDLER_LIST_STATES)}.")
        try:
            page = queries.list_handler_states(get_session(), state, queries.DEFAULT_LIMIT,
                                               args.get("cursor"))
        except queries.InvalidCursor as exc:
            raise _FilterError(f"cursor: {exc}") from None
    except _FilterError as exc:
        return render_template("handlers.html", args=args, error=str(exc), page=None), 400
    shown = {k: v for k, v in args.items() if k != "cursor"}
    return render_template("handlers.html", args=args, page=page, error=None,
                           next_url=_next_url("web.list_handlers", shown, page.next_cursor))


# Helpers.

class _FilterError(ValueError):
    """A filter value the page cannot use; the message names the field, in one line."""


def _https():
    # Behind a proxy that ends TLS the request arrives as http (the app trusts X-Forwarded-For
    # only). Believing X-Forwarded-Proto here is safe whoever sent it: a Secure cookie on plain
    # http is only one the browser will not send back, a sign-in that does not stick.
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.is_secure or "https" in (p.strip() for p in forwarded.lower().split(","))


def _tokens():
    return current_app.config["RECEIVER_ADMIN_TOKENS"]


def _local(target):
    # Only a path on this site, under /admin: never a redirect to another host.
    if not target or not target.startswith("/admin") or target.startswith("//") or "\\" in target:
        return url_for("web.overview")
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else url_for("web.overview")


def _args():
    # An empty field of a GET form is no filter.
    return {name: value for name, value in request.args.items() if value != ""}


def _event_query(args):
    return _load(schemas.event_query, _since(args))


def _since(values):
    values = dict(values)
    since = values.pop("since", None)
    if since is None:
        return values
    if since not in SINCE:
        raise _FilterError(f"since: choose one of {', '.join(SINCE)}.")
    if "received_after" not in values:
        values["received_after"] = (datetime.now(timezone.utc) - SINCE[since]).isoformat()
    return values


def _load(schema, values):
    try:
        return schema.load(values)
    except ValidationError as exc:
        raise _FilterError(_problems(exc)) from None


def _problems(exc):
    name, problems = next(iter(exc.messages.items()))
    if isinstance(problems, dict):  # a nested problem: flatten it
        problems = [str(problems)]
    return f"{name}: {' '.join(problems)}"


def _reason():
    # Required, as in the admin API: every replay's record says why it was done.
    reason = request.form.get("reason", "").strip()
    if not reason:
        raise _FilterError("Reason: say why (it is kept in the replay's record).")
    try:
        return schemas.event_replay_request.load({"reason": reason})["reason"]
    except ValidationError as exc:
        raise _FilterError(f"Reason: {' '.join(exc.messages['reason'])}") from None


def _next_url(endpoint, args, cursor):
    return url_for(endpoint, **args, cursor=cursor) if cursor else None
