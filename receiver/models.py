"""Typed SQLAlchemy models: stored events, recorded rejections, the handlers' work on events, and our own uploads to VOD."""
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (JSON, BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, MetaData,
                        String, Text, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# BIGINT keys on PostgreSQL; SQLite only auto-increments a plain INTEGER primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given for a UTC column")
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class DeliveryColumns:
    """What arrived over the wire, kept exactly, for both events and rejections."""

    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    channel: Mapped[str] = mapped_column(String(16))  # push, pull or replay
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_sha256: Mapped[str] = mapped_column(String(64))
    body_size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[Optional[str]] = mapped_column(Text)
    remote_addr: Mapped[Optional[str]] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON)


class Event(DeliveryColumns, Base):
    """One VOD event, stored once however often it was delivered."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)
    format: Mapped[str] = mapped_column(String(8))  # v3 or v2
    event_type: Mapped[str] = mapped_column(String(128))
    data_key: Mapped[Optional[str]] = mapped_column(String(128))
    event_handle: Mapped[Optional[str]] = mapped_column(String(256))
    task_id: Mapped[Optional[str]] = mapped_column(String(256), index=True)
    status: Mapped[Optional[str]] = mapped_column(String(64))
    file_id: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    file_ids: Mapped[Optional[list[str]]] = mapped_column(JSON)
    # NewFileUpload fields, from either format.
    media_url: Mapped[Optional[str]] = mapped_column(Text)
    source_type: Mapped[Optional[str]] = mapped_column(String(64))
    source_context: Mapped[Optional[str]] = mapped_column(String(1000))
    procedure_task_id: Mapped[Optional[str]] = mapped_column(String(256), index=True)
    review_audio_video_task_id: Mapped[Optional[str]] = mapped_column(String(256))
    media_name: Mapped[Optional[str]] = mapped_column(Text)
    media_type: Mapped[Optional[str]] = mapped_column(String(64))
    storage_region: Mapped[Optional[str]] = mapped_column(String(64))
    class_id: Mapped[Optional[int]] = mapped_column(BigInteger)
    media_created_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())
    size: Mapped[Optional[int]] = mapped_column(BigInteger)
    duration: Mapped[Optional[float]]
    width: Mapped[Optional[int]]
    height: Mapped[Optional[int]]
    delivery_count: Mapped[int] = mapped_column(Integer, default=1)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Fields VOD sent in a shape we did not expect, left out or clipped (schemas.parse_warning);
    # NULL when there were none.
    parse_warnings: Mapped[Optional[list[dict[str, Any]]]] = mapped_column(JSON)

    __table_args__ = (
        Index(None, "event_type", "received_at", "id"),
        Index(None, "received_at", "id"),
        # PostgreSQL: the pattern operator class compares bytes whatever the collation, so the
        # admin API's SourceContext prefix range uses this index too (queries._prefix).
        Index(None, "source_context", postgresql_ops={"source_context": "varchar_pattern_ops"}),
    )


class Rejection(DeliveryColumns, Base):
    """A request that was refused, with the reason and the bytes it carried."""

    __tablename__ = "rejections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reason: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    # True when the body was larger than the limit and only its first bytes were kept.
    body_truncated: Mapped[bool] = mapped_column(default=False)
    # Set when a later parser stored the body as an event (reparse.py); the row stays as it was.
    resolved_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())
    resolved_event_id: Mapped[Optional[int]] = mapped_column(BigInteger)

    __table_args__ = (
        Index(None, "reason", "received_at", "id"),
        Index(None, "received_at", "id"),
    )


# The states an event's handling can be in (handler_states.state). BACKLOG: still to be settled.
BACKLOG_STATES = ("pending", "failed", "running")
HANDLER_STATES = ("processed", "failed", "dead", "pending", "running", "no_handler")
# The states an operator looks into; ix_handler_states_trouble holds just those rows (a query
# must repeat this term as it is for SQLite to use the index).
TROUBLE = "state IN ('failed', 'dead')"


class HandlerState(Base):
    """Where the application's handlers are with one event: one row per event, kept by the worker.

    The callback path never writes here: the worker finds new events by scanning `events` past
    what it has seen (receiver/handlers/worker.py), so storing a callback costs nothing extra.
    """

    __tablename__ = "handler_states"

    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("events.id", ondelete="CASCADE"),
                                          primary_key=True)
    # pending (due at due_at), running (claimed by `worker` until due_at, its lease), failed
    # (will retry at due_at), processed, dead (out of attempts) or no_handler.
    state: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # rounds run (or abandoned)
    # Handlers that have succeeded for this event: a retry runs only the others, so a handler
    # that succeeded is never run again for the same event (unless replayed).
    done: Mapped[list[str]] = mapped_column(JSON, default=list)
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    claimed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Only the backlog is indexed: the claim and the backlog metrics read this small index,
        # never the settled rows (all but a few, once the worker keeps up).
        Index("ix_handler_states_backlog", "due_at", "event_id",
              postgresql_where=text("state IN ('pending', 'failed', 'running')"),
              sqlite_where=text("state IN ('pending', 'failed', 'running')")),
        # The operator page's failed and dead lists and counts: a few rows among millions.
        Index("ix_handler_states_trouble", "updated_at", "event_id",
              postgresql_where=text(TROUBLE), sqlite_where=text(TROUBLE)),
    )


FAILED_ATTEMPT = "outcome <> 'succeeded'"


class HandlerAttempt(Base):
    """One run of one handler on one event: when, how it ended, and why it failed."""

    __tablename__ = "handler_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("events.id", ondelete="CASCADE"))
    # module:qualname; None for an attempt abandoned by a worker that stopped answering (it is
    # not known which of the event's handlers was running).
    handler: Mapped[Optional[str]] = mapped_column(String(300))
    attempt: Mapped[int] = mapped_column(Integer)  # the event's round (handler_states.attempts)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(16))  # succeeded, failed, timeout or abandoned
    error: Mapped[Optional[str]] = mapped_column(Text)
    traceback: Mapped[Optional[str]] = mapped_column(Text)
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    reason: Mapped[Optional[str]] = mapped_column(String(64))  # why run outside the worker: replay…

    __table_args__ = (
        Index(None, "event_id", "id"),
        # Failed attempts, newest first, for the operator page, without walking the successes.
        Index("ix_handler_attempts_failed", "id", postgresql_where=text(FAILED_ATTEMPT),
              sqlite_where=text(FAILED_ATTEMPT)),
    )




# Uploads not failed whose callback the overview has not seen yet (ix_uploads_waiting).
WAITING = "event_id IS NULL AND state <> 'failed'"


class Upload(Base):
    """One upload to VOD through ApplyUpload -> COS -> CommitUpload, recorded from its start.

    state is started, stored (in COS), committed or failed. Whether VOD's callback came is not
    stored here: it is the event linked by query (queries.upload_event_id), so the callback path
    writes nothing extra and the link holds whichever of the two arrives first.
    """

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stored_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())
    committed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())
    failed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())
    # The file, as found when the upload started; a re-run finds its row by these.
    file_path: Mapped[str] = mapped_column(Text)
    file_name: Mapped[str] = mapped_column(Text)
    file_size: Mapped[Optional[int]] = mapped_column(BigInteger)
    file_mtime_ns: Mapped[Optional[int]] = mapped_column(BigInteger)
    file_sha256: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    # What was asked of VOD.
    source_context: Mapped[Optional[str]] = mapped_column(String(250), index=True)
    source_context_generated: Mapped[bool] = mapped_column(default=False)
    media_type: Mapped[Optional[str]] = mapped_column(String(64))
    media_name: Mapped[Optional[str]] = mapped_column(Text)
    procedure: Mapped[Optional[str]] = mapped_column(Text)
    storage_region: Mapped[Optional[str]] = mapped_column(String(64))
    sub_app_id: Mapped[Optional[int]] = mapped_column(BigInteger)
    class_id: Mapped[Optional[int]] = mapped_column(BigInteger)
    session_context: Mapped[Optional[str]] = mapped_column(Text)
    expire_time: Mapped[Optional[str]] = mapped_column(String(64))
    cover_path: Mapped[Optional[str]] = mapped_column(Text)
    api_region: Mapped[Optional[str]] = mapped_column(String(64))
    part_size: Mapped[Optional[int]] = mapped_column(BigInteger)
    resumes: Mapped[int] = mapped_column(Integer, default=0)
    # ApplyUpload's session. The VodSessionKey and temporary COS credentials are kept only
    # while the upload is in progress (a re-run resumes with them) and wiped once it is
    # committed or failed; session_expires_at is their TempCertificate.ExpiredTime.
    vod_session_key: Mapped[Optional[str]] = mapped_column(Text)
    temp_secret_id: Mapped[Optional[str]] = mapped_column(Text)
    temp_secret_key: Mapped[Optional[str]] = mapped_column(Text)
    temp_token: Mapped[Optional[str]] = mapped_column(Text)
    session_expires_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())
    storage_bucket: Mapped[Optional[str]] = mapped_column(String(256))
    cos_region: Mapped[Optional[str]] = mapped_column(String(64))
    media_storage_path: Mapped[Optional[str]] = mapped_column(Text)
    cover_storage_path: Mapped[Optional[str]] = mapped_column(Text)
    # CommitUpload's answer.
    file_id: Mapped[Optional[str]] = mapped_column(String(64), index=True)
    media_url: Mapped[Optional[str]] = mapped_column(Text)
    cover_url: Mapped[Optional[str]] = mapped_column(Text)
    # Why it failed: the step (check, apply, cos, commit, resume), VOD's or COS's code, message.
    failed_step: Mapped[Optional[str]] = mapped_column(String(16))
    error_code: Mapped[Optional[str]] = mapped_column(String(128))
    error_message: Mapped[Optional[str]] = mapped_column(Text)
    # The callback's event, remembered by the overview once it has found it (overview.uploads):
    # from then on only the uploads still waiting are looked up. queries.upload_event_id is the
    # link itself, and holds whether or not this is filled.
    event_id: Mapped[Optional[int]] = mapped_column(BigInteger)

    __table_args__ = (
        Index(None, "started_at", "id"),
        Index(None, "state", "started_at"),
        Index("ix_uploads_waiting", "started_at", postgresql_where=text(WAITING),
              sqlite_where=text(WAITING)),
    )


def utcnow():
    return datetime.now(timezone.utc)


class Replay(Base):
    """One replay: when, why, what it selected, where it sent it, and how that went."""

    __tablename__ = "replays"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())  # None: interrupted
    reason: Mapped[Optional[str]] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(32))  # cli or admin-api
    subject: Mapped[str] = mapped_column(String(16))  # the table replayed: events or rejections
    # The filters, state or ids it was asked for, as given (admin API parameter names).
    selection: Mapped[dict[str, Any]] = mapped_column(JSON)
    # handlers, queue, or the URL re-POSTed to (its token redacted).
    target: Mapped[str] = mapped_column(Text)
    selected: Mapped[int] = mapped_column(Integer)  # rows selected
    outcomes: Mapped[dict[str, int]] = mapped_column(JSON)  # outcome -> rows, so far


class ReplayItem(Base):
    """One row a replay acted on, and what became of it."""

    __tablename__ = "replay_items"

    replay_id: Mapped[int] = mapped_column(BigId, ForeignKey("replays.id", ondelete="CASCADE"),
                                           primary_key=True)
    # An id in the replay's subject table. No foreign key: a replay of rejections keeps its
    # items here too.
    row_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[Optional[str]] = mapped_column(Text)  # the error, or the HTTP answer

    # Which replays touched this event (or rejection)?
    __table_args__ = (Index(None, "row_id"),)


class DuplicateDelivery(Base):
    """Deliveries of an event already stored, when they came: written by a database trigger on
    events.delivery_count (migration 0010), so the callback path runs no statement of its own."""

    __tablename__ = "duplicate_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigId)
    # The event's last_seen_at after the delivery: its arrival, unless a drained spool file
    # older than the last delivery (then the later time).
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    deliveries: Mapped[int] = mapped_column(Integer)


class CallbackHour(Base):
    """What arrived in one closed hour, by kind (events, duplicates, rejections) and key (the
    event type or rejection reason): the overview's counts, kept so it never scans events."""

    __tablename__ = "callback_hours"

    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)

    # The all-time totals sum every row by (kind, key): read from this index alone, in its order,
    # they cost 4 ms instead of 28 at 180 days of hours (SQLite).
    __table_args__ = (Index(None, "kind", "key", "count"),)


class RollupMark(Base):
    """How far callback_hours is filled: every hour before `filled_until` is counted there."""

    __tablename__ = "rollup_marks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    filled_until: Mapped[Optional[datetime]] = mapped_column(UTCDateTime())
    # Raised by every change: a fill counted before it does not write over it (overview.py).
    version: Mapped[int] = mapped_column(Integer, default=0)
