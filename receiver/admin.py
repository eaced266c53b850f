"""Blueprint: the admin API over stored events and rejections (queries, and replaying events),
and its OpenAPI document.

Registered only when RECEIVER_ADMIN_TOKENS names at least one token: without one the API does
not exist (404) rather than being open. Its only writes are the replays, each one recorded.
"""
import functools
import hmac

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, request
from marshmallow import ValidationError
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import NotFound, Unauthorized

from . import admin_schemas as schemas, queries, spool
from .db import get_session
from .errors import ApiError
from .handlers import replay

PREFIX = "/admin/api/v1"
bp = Blueprint("admin", __name__, url_prefix=PREFIX)


@bp.get("/events")
def list_events():
    """List stored events, newest first, one page at a time."""
    filters, limit, cursor = _query(schemas.event_query)
    return schemas.event_page.dump(queries.list_events(get_session(), filters, limit, cursor))


@bp.get("/events/<int:event_id>")
def show_event(event_id):
    """One stored event: parsed fields, deliveries, headers and the body as received."""
    return schemas.event.dump(queries.get_event(get_session(), event_id) or _not_found("event"))


@bp.post("/events/<int:event_id>/replay")
def replay_event(event_id):
    """Queue one stored event (processed and dead ones too) for the worker to run again."""
    options = _body(schemas.event_replay_request)
    session = get_session()
    if queries.get_event(session, event_id) is None:
        _not_found("event")
    return _replay(replay.Selection("events", ids=(event_id,)), options)


@bp.post("/events/replay")
def replay_events():
    """Queue the events matching the filters and state for the worker to run again; count them."""
    options = _body(schemas.replay_request)
    reason, dry_run = options.pop("reason"), options.pop("dry_run")
    state = options.pop("state", None)
    return _replay(replay.Selection("events", options, state),
                   {"reason": reason, "dry_run": dry_run})


@bp.get("/rejections")
def list_rejections():
    """List refused requests, newest first, one page at a time."""
    filters, limit, cursor = _query(schemas.rejection_query)
    page = queries.list_rejections(get_session(), filters, limit, cursor)
    return schemas.rejection_page.dump(page)


@bp.get("/rejections/<int:rejection_id>")
def show_rejection(rejection_id):
    """One refused request: why, and the bytes it carried."""
    found = queries.get_rejection(get_session(), rejection_id) or _not_found("rejection")
    return schemas.rejection.dump(found)


@bp.get("/stats")
def show_stats():
    """Counts by event type, day and rejection reason, the delivery ledger and the spool depth."""
    data = queries.stats(get_session())
    data["spool_depth"] = spool.depth(current_app.config["RECEIVER_SPOOL_DIR"])
    return schemas.stats.dump(data)


@bp.get("/uploads")
def list_uploads():
    """List our own uploads to VOD, newest first, each with its status and linked event id."""
    filters, limit, cursor = _query(schemas.upload_query)
    page = queries.list_uploads(get_session(), filters, limit, cursor)
    return schemas.upload_page.dump({"items": [schemas.upload_data(u, e) for u, e in page.items],
                                     "next_cursor": page.next_cursor})


@bp.get("/uploads/<int:upload_id>")
def show_upload(upload_id):
    """One upload: every step's time, VOD's answer or the error, and the event it caused."""
    found = queries.get_upload(get_session(), upload_id) or _not_found("upload")
    upload, event = found
    return schemas.upload.dump(schemas.upload_data(upload, event=event))


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3 document of this API (needs no token: it describes shapes, holds no data)."""
    return openapi_spec()


def init_app(app):
    """Register the admin API if RECEIVER_ADMIN_TOKENS names at least one token."""
    if app.config["RECEIVER_ADMIN_TOKENS"]:
        app.register_blueprint(bp)


def is_admin_token(token, tokens):
    """Whether `token` is one of `tokens`, compared in constant time."""
    token = token.encode()
    matched = False
    for candidate in tokens:  # no early exit: the time taken says nothing about which matched
        matched |= hmac.compare_digest(token, candidate.encode())
    return matched


@bp.before_request
def _authenticate():
    if request.endpoint == "admin.openapi":
        return
    auth = request.authorization
    token = auth.token if auth is not None and auth.type == "bearer" else None
    if not token or not is_admin_token(token, current_app.config["RECEIVER_ADMIN_TOKENS"]):
        raise Unauthorized("A valid admin token is required: 'Authorization: Bearer <token>'.",
                           www_authenticate=WWWAuthenticate("bearer"))


@bp.after_request
def _no_store(response):
    # Stored callbacks carry customer data: keep them out of shared caches.
    response.headers["Cache-Control"] = "no-store"
    return response


def _query(schema):
    repeated = [name for name, values in request.args.lists() if len(values) > 1]
    if repeated:
        name = repeated[0]
        raise ApiError("invalid_parameter", f"Query parameter {name!r} is given more than once.",
                       details={name: ["Give this parameter once."]})
    try:
        return schema.load(request.args.to_dict())
    except ValidationError as exc:
        name, problems = next(iter(exc.messages.items()))
        raise ApiError("invalid_parameter", f"Query parameter {name!r}: {' '.join(problems)}",
                       details=exc.messages) from None


def _body(schema):
    # Any Content-Type: `curl -d` sends form-encoded by default, and the body is JSON anyway.
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise ApiError("invalid_body", "The body must be a JSON object.")
    try:
        return schema.load(data)
    except ValidationError as exc:
        name, problems = next(iter(exc.messages.items()))
        raise ApiError("invalid_parameter", f"Field {name!r}: {' '.join(problems)}",
                       details=exc.messages) from None


def _replay(selection, options):
    # Queued, never run here: a handler may take a minute, and this process answers VOD's
    # callbacks within 5 seconds. `vod-receiver work` runs them, as it does new events.
    session = get_session()
    row_ids = selection.row_ids(session)
    session.close()  # ends the read: the queueing writes in sessions of its own
    app = current_app._get_current_object()
    result = {"count": len(row_ids), "dry_run": options["dry_run"], "replay": None, "changes": []}
    if options["dry_run"]:
        changes = replay.preview(app, "events", row_ids, limit=schemas.MAX_CHANGES)
        result["changes"] = [change.to_dict() for change in changes]
    elif row_ids:
        result["replay"] = replay.run(app, selection, row_ids, replay.Queue(app),
                                      reason=options["reason"], origin="admin-api")
    return schemas.replay_result.dump(result)


def _not_found(what):
    raise NotFound(f"No {what} with this id.")


@functools.cache
def openapi_spec():
    """The OpenAPI document, generated from the admin schemas."""
    # apispec rather than flask-smorest: smorest would wrap the blueprint, bring webargs and
    # its own error handler and error shape, and page by offset; apispec only turns the
    # marshmallow schemas into the document, and the views stay plain Flask.
    spec = APISpec(title="vod-receiver admin API", version="1", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Queries of the VOD callbacks the receiver stored and "
                                        "the requests it refused, and replays of stored events."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.options["security"] = [{"bearer": []}]
    spec.components.schema("Error", schema=schemas.ErrorSchema)
    for status, description in (("400", "A query parameter is invalid; `details` names it."),
                                ("401", "The bearer token is missing or wrong."),
                                ("404", "No such row.")):
        spec.components.response(status, {"description": description, "content": {
            "application/json": {"schema": "Error"}}})

    def path(url, view, schema, query=None, id_name=None, body=None):
        operation = {"operationId": view.__name__, "summary": view.__doc__,
                     "parameters": [], "responses": {"200": {
                         "description": "OK", "content": {"application/json": {"schema": schema}}},
                         "401": "401"}}
        if query is not None:
            operation["parameters"].append({"in": "query", "schema": query})
            operation["responses"]["400"] = "400"
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": body}}}
            operation["responses"]["400"] = "400"
        if id_name is not None:
            operation["parameters"].append({"in": "path", "name": id_name, "required": True,
                                            "schema": {"type": "integer", "minimum": 1}})
            operation["responses"]["404"] = "404"
        spec.path(path=PREFIX + url, operations={"post" if body else "get": operation})

    path("/events", list_events, schemas.EventPageSchema, query=schemas.EventQuerySchema)
    path("/events/replay", replay_events, schemas.ReplayResultSchema,
         body=schemas.ReplayRequestSchema)
    path("/events/{event_id}", show_event, schemas.EventSchema, id_name="event_id")
    path("/events/{event_id}/replay", replay_event, schemas.ReplayResultSchema,
         id_name="event_id", body=schemas.EventReplayRequestSchema)
    path("/rejections", list_rejections, schemas.RejectionPageSchema,
         query=schemas.RejectionQuerySchema)
    path("/rejections/{rejection_id}", show_rejection, schemas.RejectionSchema,
         id_name="rejection_id")
    path("/stats", show_stats, schemas.StatsSchema)
    path("/uploads", list_uploads, schemas.UploadPageSchema, query=schemas.UploadQuerySchema)
    path("/uploads/{upload_id}", show_upload, schemas.UploadSchema, id_name="upload_id")
    return spec.to_dict()
