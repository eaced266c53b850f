"""Store one delivery: as an event (new or duplicate) or as a rejection. The caller commits.

Everything here runs on a Core Connection, not an ORM Session: the callback path writes one
row per request, and the Session's unit-of-work bookkeeping cost more than the insert itself.
Code holding a Session passes `session.connection()`.
"""
import base64
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
    return _compiled(_reject_statement, connection.dialect).execute(connection, values)[0]


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
    if parsed.warnings:  # left out otherwise: NULL, not a JSON empty list, on every clean event
        values["parse_warnings"] = parsed.warnings
    return _compiled(_upsert_statement, connection.dialect).execute(connection, values)


def _compiled(build, dialect):
    # Built and compiled once per database driver: building the upsert per request (and its
    # cache key over every value) cost more than storing the row.
    key = (build, dialect.name, dialect.driver)
    if key not in _COMPILED:
        _COMPILED[key] = CompiledInsert(build(dialect.name), dialect)
    return _COMPILED[key]


def _reject_statement(_dialect_name):
    rejections = Rejection.__table__
    return insert(rejections).returning(rejections.c.id)


def _upsert_statement(dialect_name):
    if dialect_name not in _INSERTS:
        raise RuntimeError(f"unsupported database {dialect_name!r}: use SQLite or PostgreSQL")
    events = Event.__table__
    upsert = _INSERTS[dialect_name](events)
    return upsert.on_conflict_do_update(
        index_elements=[events.c.dedup_key],
        set_={
            "delivery_count": events.c.delivery_count + 1,
            # A drained spool file can be older than a delivery already stored.
            "last_seen_at": case(
                (events.c.last_seen_at < upsert.excluded.last_seen_at, upsert.excluded.last_seen_at),
                else_=events.c.last_seen_at,
            ),
        },
    ).returning(events.c.id, events.c.delivery_count)


_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
_COMPILED = {}


class CompiledInsert:
    """An INSERT … RETURNING compiled once for a dialect and run on the driver's cursor.

    Connection.execute spends as much CPU as the insert itself (execution context, result
    object, parameter processing), half of what storing a callback cost. The callback path
    runs the same two statements every time, so their SQL, parameter order and each value's
    conversion are worked out once, by SQLAlchemy's own compiler and type processors: the
    rows are those Connection.execute would write, and errors are raised as the same
    SQLAlchemy exceptions (a lost connection invalidated, so the caller can retry).
    """

    def __init__(self, statement, dialect):
        table = statement.table
        columns = [column for column in table.columns if not column.primary_key]
        compiled = statement.compile(dialect=dialect, column_keys=[c.key for c in columns])
        self.statement, self.sql, self.dialect = statement, compiled.string, dialect
        self.positional = compiled.positiontup is not None
        self.binds = []  # (parameter name, value key, processor, value when not given)
        for name in compiled.positiontup or compiled.binds:
            bind = compiled.binds[name]
            column = table.columns.get(bind.key)
            default = None if bind.required else bind.effective_value  # a literal in the SQL
            if column is not None and column.default is not None and column.default.is_scalar:
                default = column.default.arg
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.binds.append((name, bind.key, processor, default))

    def execute(self, connection, values):
        """Insert `values` (column key -> value) on `connection`; the row RETURNING gave."""
        params = self._parameters(values, connection)
        if not connection.in_transaction():
            connection.begin()  # as execute would: the caller's commit() commits this
        cursor = connection.connection.cursor()
        try:
            cursor.execute(self.sql, params)
            return cursor.fetchone()
        except Exception as exc:
            disconnect = (isinstance(exc, self.dialect.loaded_dbapi.Error)
                          and self.dialect.is_disconnect(exc, connection.connection.dbapi_connection, cursor))
            if disconnect:
                connection.invalidate(exc)
            raise self._error(exc, params, connection, disconnect) from exc
        finally:
            if not connection.invalidated:
                cursor.close()

    def _parameters(self, values, connection):
        # A column left out is NULL, not its type's None (JSON would write the text null).
        params = []
        for _name, key, process, default in self.binds:
            value = values.get(key, default)
            if process is not None and (value is not None or key in values):
                try:
                    value = process(value)
                except Exception as exc:  # a value its column's type cannot take
                    raise self._error(exc, None, connection) from exc
            params.append(value)
        if self.positional:
            return params
        return {name: value for (name, *_rest), value in zip(self.binds, params)}

    def _error(self, exc, params, connection, disconnect=False):
        return DBAPIError.instance(self.sql, params, exc, self.dialect.loaded_dbapi.Error,
                                   hide_parameters=connection.engine.hide_parameters,
                                   connection_invalidated=disconnect, dialect=self.dialect)


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
