"""Store one delivery: as an event (new or duplicate) or as a rejection. The caller commits.

Everything here runs on a Core Connection, not an ORM Session: the callback path writes one
row per request, and the Session's unit-of-work bookkeeping cost more than the insert itself.
Code holding a Session passes `session.connection()`.
"""
import base64
import functools
import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import case, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from . import events
from .events import ParsedEvent, Refusal
from .models import Event, Rejection, utcnow


@dataclass
class Delivery:
    """What arrived: the exact bytes and where they came from."""

    body: bytes
    received_at: datetime = field(default_factory=utcnow)
    channel: str = "push"
    content_type: str | None = None
    remote_addr: str | None = None
    headers: dict = field(default_factory=dict)
    method: str = "POST"
    path: str = "/callbacks/vod"
    body_truncated: bool = False

    def to_dict(self):
        data = asdict(self)
        data["body"] = base64.b64encode(self.body).decode()
        data["received_at"] = self.received_at.isoformat()
        return data

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        data["body"] = base64.b64decode(data["body"])
        data["received_at"] = datetime.fromisoformat(data["received_at"])
        return cls(**data)


@dataclass
class Outcome:
    """What became of a delivery."""

    kind: str  # stored, duplicate or rejected
    id: int


def judge(delivery: Delivery, refusal: Refusal | None = None) -> ParsedEvent | Refusal:
    """The verdict on a delivery: its parsed event, or why it is refused."""
    if refusal is not None:
        return refusal
    try:
        return events.parse(delivery.body)
    except Refusal as exc:
        return exc


def record(connection, delivery: Delivery, verdict: ParsedEvent | Refusal) -> Outcome:
    """Write `delivery` on `connection` as an event (new or duplicate) or as a rejection."""
    if isinstance(verdict, Refusal):
        return Outcome("rejected", reject(connection, delivery, verdict))
    event_id, delivery_count = _upsert_event(connection, delivery, verdict)
    return Outcome("stored" if delivery_count == 1 else "duplicate", event_id)


def reject(connection, delivery: Delivery, refusal: Refusal) -> int:
    """Record a refused delivery with its reason and bytes; returns the rejection's id."""
    values = {
        **_delivery_columns(delivery),
        "reason": refusal.reason,
        "status_code": refusal.status,
        "message": refusal.message,
        "details": refusal.details,
        "method": delivery.method,
        "path": delivery.path,
        "body_truncated": delivery.body_truncated,
    }
    return connection.execute(_REJECT, values).scalar_one()


def refused_content(exc) -> bool:
    """Whether the database refused a statement's values, rather than being unavailable.

    A value no column type could bind, or one the database rejects (out of range, a constraint):
    writing it again cannot succeed, unlike after a lost connection or a locked SQLite file.
    """
    return isinstance(exc, StatementError) and (
        not isinstance(exc, DBAPIError) or isinstance(exc, (IntegrityError, DataError)))


def _upsert_event(connection, delivery, parsed):
    # One statement decides new-or-duplicate atomically: concurrent deliveries of the same
    # event (gunicorn workers, several instances on PostgreSQL) meet at the unique dedup_key
    # and the loser becomes a counted duplicate instead of an IntegrityError and a 500.
    values = {
        **_delivery_columns(delivery),
        **parsed.fields,
        "dedup_key": parsed.dedup_key,
        "format": parsed.format,
        "event_type": parsed.event_type,
        "data_key": parsed.data_key,
        "delivery_count": 1,
        "last_seen_at": delivery.received_at,
    }
    statement = _upsert_statement(connection.dialect.name)
    return connection.execute(statement, values).one()


@functools.cache
def _upsert_statement(dialect_name):
    # Built once, values bound at execution: building it per request (and its cache key over
    # every value) cost more than storing the row.
    if dialect_name not in _INSERTS:
        raise RuntimeError(f"unsupported database {dialect_name!r}: use SQLite or PostgreSQL")
    events = Event.__table__
    insert = _INSERTS[dialect_name](events)
    return insert.on_conflict_do_update(
        index_elements=[events.c.dedup_key],
        set_={
            "delivery_count": events.c.delivery_count + 1,
            # A drained spool file can be older than a delivery already stored.
            "last_seen_at": case(
                (events.c.last_seen_at < insert.excluded.last_seen_at, insert.excluded.last_seen_at),
                else_=events.c.last_seen_at,
            ),
        },
    ).returning(events.c.id, events.c.delivery_count)


_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
_REJECT = insert(Rejection.__table__).returning(Rejection.__table__.c.id)


def _delivery_columns(delivery):
    return {
        "received_at": delivery.received_at,
        "channel": delivery.channel,
        "body": delivery.body,
        "body_sha256": hashlib.sha256(delivery.body).hexdigest(),
        "body_size": len(delivery.body),
        "content_type": delivery.content_type,
        "remote_addr": delivery.remote_addr,
        "headers": delivery.headers,
    }
