"""Logs: one JSON object per line (a human format in a terminal), and a request id per request.

The JSON formatter is written out rather than taken from python-json-logger: it emits an
allow-list (the standard fields plus the `fields` dict a call passes) instead of every attribute
of the record, which is how bodies and secrets drift into logs, and it is a dozen lines.
"""
import json
import logging
import random
import re
import sys
import time
from datetime import datetime, timezone

from flask import g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"  # how WSGI presents that header
# A caller's id is reused only when it is short and plain: it is echoed and logged verbatim.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and the call's fields."""

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)


class TextFormatter(logging.Formatter):
    """For a terminal: the usual line, then the call's fields as key=value."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record):
        fields = dict(getattr(record, "fields", None) or {})
        if getattr(record, "request_id", None):
            fields["request_id"] = record.request_id
        pairs = " ".join(f"{key}={value!r}" for key, value in fields.items() if value is not None)
        return f"{super().format(record)} {pairs}".rstrip()


class RequestIdFilter(logging.Filter):
    """Stamp records logged during a request with its id."""

    def filter(self, record):
        """Add the request id, if any; never drops a record."""
        if not hasattr(record, "request_id") and has_request_context():
            record.request_id = g.get("request_id")
        return True


def formatter(log_format, stream):
    """The formatter for `log_format` (json, text, or auto: text when `stream` is a terminal)."""
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    if log_format not in ("json", "text"):
        raise RuntimeError(f"RECEIVER_LOG_FORMAT must be auto, json or text, not {log_format!r}")
    return TextFormatter() if log_format == "text" else JSONFormatter()


def configure(log_format="auto", stream=None):
    """Log the receiver's INFO records to stderr, unless the process configured logging itself."""
    receiver = logging.getLogger("receiver")
    if receiver.level == logging.NOTSET:
        receiver.setLevel(logging.INFO)
    root = logging.getLogger()
    if root.handlers:  # gunicorn leaves the root alone; pytest and embedding apps do not
        return None
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format, stream))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    return handler


def init_app(app):
    """Configure logging and give every request an id, echoed in the X-Request-Id header."""
    configure(app.config["RECEIVER_LOG_FORMAT"])
    # No format here shows the calling line, thread or multiprocessing name, and every record
    # would look them up: the logging HOWTO's "Optimization" section turns them off so.
    logging._srcfile = None
    logging.logThreads = logging.logMultiprocessing = False
    app.before_request(_begin)
    app.after_request(_echo_request_id)


def _begin():
    supplied = request.environ.get(_REQUEST_ID_ENVIRON, "")
    # An id only has to be unique, not secret: random bits, without the system call (and the
    # hand-over of the interpreter lock to another thread) that uuid4 makes.
    context = g._get_current_object()
    context.request_id = supplied if _REQUEST_ID.match(supplied) else f"{random.getrandbits(128):032x}"
    context.request_started = time.perf_counter()


def _echo_request_id(response):
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response
