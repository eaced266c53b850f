"""Typed SQLAlchemy models: stored events, recorded rejections, and our own uploads to VOD."""
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, LargeBinary, MetaData, String, Text
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

    __table_args__ = (
        Index(None, "reason", "received_at", "id"),
        Index(None, "received_at", "id"),
    )


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

    __table_args__ = (
        Index(None, "started_at", "id"),
        Index(None, "state", "started_at"),
    )


def utcnow():
    return datetime.now(timezone.utc)
