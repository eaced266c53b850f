"""What each callback tells operators: its metrics and its one log line."""
import logging
import time

from flask import g

from . import metrics
from .events import Refusal

log = logging.getLogger("receiver.callbacks")
# SourceContext is the uploader's own string (up to 1000 characters); a log line needs a prefix.
MAX_LOGGED_CHARS = 200


def observe(delivery, verdict, outcome):
    """Count one callback and log it: request id, event type, FileId, outcome, latency."""
    current = g._get_current_object()  # this request's
    seconds = time.perf_counter() - current.request_started
    metrics.metrics().callback(verdict, outcome, seconds)
    fields = {"outcome": outcome, "latency_ms": round(seconds * 1000, 2),
              "channel": delivery.channel, "body_size": len(delivery.body),
              "remote_addr": delivery.remote_addr}
    if isinstance(verdict, Refusal):
        fields.update(reason=verdict.reason, status=verdict.status)
    else:
        context = verdict.fields.get("source_context")
        fields.update(format=verdict.format, event_type=verdict.event_type,
                      file_id=verdict.fields.get("file_id"), task_id=verdict.fields.get("task_id"),
                      source_context=context[:MAX_LOGGED_CHARS] if context else context)
        if verdict.unknown_fields:
            fields["unknown_fields"] = list(verdict.unknown_fields)
        if verdict.warnings:
            fields["parse_warnings"] = [warning["field"] for warning in verdict.warnings]
    # A spooled delivery is safe but means the database failed: worth a warning.
    level = logging.WARNING if outcome == "spooled" else logging.INFO
    log.log(level, "callback %s", outcome, extra={"request_id": current.request_id, "fields": fields})
