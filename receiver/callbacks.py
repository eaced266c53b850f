"""Blueprint for VOD's callback URL: read raw -> parse -> store (or spool) -> 200 {}."""
import logging
import re
import threading

from flask import Blueprint, current_app, request
from sqlalchemy.exc import SQLAlchemyError

from . import spool, store
from .db import get_session, write_lock
from .events import Refusal
from .telemetry import observe

bp = Blueprint("callbacks", __name__)
log = logging.getLogger(__name__)

SECRET_HEADER = re.compile(r"authorization|cookie|token|secret|sign|password|api-?key", re.I)
REDACTED = "[redacted]"
_drainer_lock = threading.Lock()


@bp.post("/callbacks/vod")
def receive():
    """Receive one VOD callback (v3 or legacy v2) and store it before answering."""
    delivery, refusal = read_delivery()
    verdict, outcome = record(delivery, refusal)
    observe(delivery, verdict, outcome)
    if isinstance(verdict, Refusal):
        raise verdict
    # VOD ignores the answer (vod-spec §4); {} is what its docs show.
    return {}


def read_delivery(channel="push"):
    """The request as a Delivery, reading at most the body limit (a larger body is refused)."""
    limit = current_app.config["RECEIVER_MAX_BODY_BYTES"]
    body = request.stream.read(limit + 1)
    declared = request.content_length
    too_large = len(body) > limit or (declared is not None and declared > limit)
    delivery = store.Delivery(
        body=body[:limit],
        channel=channel,
        content_type=request.content_type,
        remote_addr=request.remote_addr,
        headers=redact_headers(request.headers),
        method=request.method,
        path=_text(request.path),
        body_truncated=too_large,
    )
    refusal = None
    if too_large:
        refusal = Refusal("body_too_large", f"The body is larger than the limit of {limit} bytes.",
                          status=413, details={"limit": limit, "content_length": declared})
    return delivery, refusal


def record(delivery, refusal=None):
    """Store the delivery, or spool it when the database fails.

    Returns (verdict, outcome): the ParsedEvent stored or the Refusal to answer with, and
    what became of the delivery: stored, duplicate, rejected or spooled.
    """
    verdict = store.judge(delivery, refusal)
    session = get_session()
    try:
        with write_lock():
            outcome = store.record(session, delivery, verdict).kind
            session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        path = spool.write(current_app.config["RECEIVER_SPOOL_DIR"], delivery,
                           verdict if isinstance(verdict, Refusal) else None)
        log.warning("database write failed (%s); delivery spooled to %s", exc, path.name)
        outcome = "spooled"
    return verdict, outcome


def redact_headers(headers):
    """Request headers as a dict, with credentials and signatures replaced."""
    return {_text(k): REDACTED if SECRET_HEADER.search(k) else _text(v) for k, v in headers.items()}


@bp.before_app_request
def _start_spool_drainer():
    # Started on the first request, so only serving processes drain (not CLI commands),
    # and in each gunicorn worker after the fork.
    app = current_app._get_current_object()
    if "receiver.drainer" not in app.extensions:
        with _drainer_lock:
            if "receiver.drainer" not in app.extensions:
                app.extensions["receiver.drainer"] = spool.start_drainer(app)


def _text(value):
    # Header values and paths can carry bytes PostgreSQL cannot store in text.
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
