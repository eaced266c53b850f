"""Marshmallow schemas of the admin API: query parameters in, JSON out; the OpenAPI document is
generated from them, and the CLI validates its options and prints its --json with them too."""
import base64
import re
from datetime import datetime, timedelta, timezone

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from . import queries

FORMATS = ("v3", "v2")
CHANNELS = ("push", "pull", "replay")


# PostgreSQL cannot take NUL in a text parameter, and nothing stored contains one. A pattern
# (not a function) so that the OpenAPI document says so too.
_NO_NUL = validate.Regexp(r"^[^\x00]*$", error="Must not contain NUL characters.")


def _text(max_length, **kwargs):
    """A non-empty string parameter no longer than the column it is compared with."""
    return fields.String(validate=[_NO_NUL, validate.Length(min=1, max=max_length)], **kwargs)


class _UTC(fields.AwareDateTime):
    """An ISO 8601 instant; one without an offset is taken as UTC."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=timezone.utc, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:
            # Year 1 at +01:00 is before datetime.min in UTC (9999 at -01:00 after max): the
            # nearest representable instant selects the same rows.
            limit = datetime.min if value.year == 1 else datetime.max
            return limit.replace(tzinfo=timezone.utc)


class _PageQuerySchema(Schema):
    received_after = _UTC(metadata={"description": "Only rows received at or after this instant."})
    received_before = _UTC(metadata={"description": "Only rows received before this instant."})
    limit = fields.Integer(load_default=queries.DEFAULT_LIMIT,
                           validate=validate.Range(min=1, max=queries.MAX_LIMIT),
                           metadata={"description": "Rows per page."})
    cursor = _text(2000, metadata={"description": "`next_cursor` of the previous page."})

    @validates_schema
    def _cursor_is_ours(self, data, **kwargs):
        if "cursor" in data:
            try:
                queries.decode_cursor(data["cursor"])
            except queries.InvalidCursor as exc:
                raise ValidationError(str(exc), "cursor") from None

    @post_load
    def _split(self, data, **kwargs):
        # (filters, limit, cursor): the arguments of queries.list_*.
        return data, data.pop("limit"), data.pop("cursor", None)


class EventQuerySchema(_PageQuerySchema):
    event_type = _text(128, metadata={"description": "EventType, e.g. NewFileUpload."})
    file_id = _text(64, metadata={"description": "FileId the event is about."})
    source_context = _text(1000, metadata={"description": "SourceContext, exactly."})
    source_context_prefix = _text(1000, metadata={
        "description": "SourceContext starting with this (taken literally: no wildcards)."})
    procedure_task_id = _text(256, metadata={"description": "ProcedureTaskId of the upload."})
    task_id = _text(256, metadata={"description": "TaskId of the event."})
    source_type = _text(64, metadata={"description": "SourceType, e.g. Upload, Record."})
    format = fields.String(validate=validate.OneOf(FORMATS),
                           metadata={"description": "Body format."})
    channel = fields.String(validate=validate.OneOf(CHANNELS),
                            metadata={"description": "How it arrived."})


class RejectionQuerySchema(_PageQuerySchema):
    reason = _text(64, metadata={"description": "Why it was refused, e.g. invalid_json."})


class EventSummarySchema(Schema):
    id = fields.Integer()
    received_at = fields.DateTime(metadata={"description": "First delivery."})
    last_seen_at = fields.DateTime(metadata={"description": "Latest delivery."})
    delivery_count = fields.Integer(
        metadata={"description": "Deliveries of this event (1 + duplicates)."})
    event_type = fields.String()
    format = fields.String()
    channel = fields.String()
    status = fields.String(allow_none=True)
    file_id = fields.String(allow_none=True)
    task_id = fields.String(allow_none=True)
    source_type = fields.String(allow_none=True)
    source_context = fields.String(allow_none=True)
    procedure_task_id = fields.String(allow_none=True)


class _BodySchema(Schema):
    body_sha256 = fields.String()
    body_size = fields.Integer()
    body_encoding = fields.Method("_encoding",
                                  metadata={"type": "string", "enum": ["utf-8", "base64"]})
    body = fields.Method("_body", metadata={
        "type": "string",
        "description": "Exactly as received: text if valid UTF-8, else base64 (body_encoding)."})
    headers = fields.Dict(keys=fields.String(), values=fields.String())
    content_type = fields.String(allow_none=True)
    remote_addr = fields.String(allow_none=True)

    def _encoding(self, row):
        return "utf-8" if _utf8(row.body) is not None else "base64"

    def _body(self, row):
        text = _utf8(row.body)
        return text if text is not None else base64.b64encode(row.body).decode()


class EventSchema(EventSummarySchema, _BodySchema):
    data_key = fields.String(allow_none=True)
    event_handle = fields.String(allow_none=True)
    file_ids = fields.List(fields.String(), allow_none=True)
    media_url = fields.String(allow_none=True)
    review_audio_video_task_id = fields.String(allow_none=True)
    media_name = fields.String(allow_none=True)
    media_type = fields.String(allow_none=True)
    storage_region = fields.String(allow_none=True)
    class_id = fields.Integer(allow_none=True)
    media_created_at = fields.DateTime(allow_none=True)
    size = fields.Integer(allow_none=True)
    duration = fields.Float(allow_none=True)
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    dedup_key = fields.String()


class RejectionSummarySchema(Schema):
    id = fields.Integer()
    received_at = fields.DateTime()
    reason = fields.String()
    status_code = fields.Integer(
        metadata={"description": "The status the request was answered with."})
    message = fields.String()
    channel = fields.String()
    method = fields.String()
    path = fields.String()
    remote_addr = fields.String(allow_none=True)
    body_size = fields.Integer()
    body_truncated = fields.Boolean(metadata={"description": "Only the first bytes were kept."})


class RejectionSchema(RejectionSummarySchema, _BodySchema):
    details = fields.Dict(allow_none=True)


class EventPageSchema(Schema):
    items = fields.List(fields.Nested(EventSummarySchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "None on the last page."})


class RejectionPageSchema(Schema):
    items = fields.List(fields.Nested(RejectionSummarySchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "None on the last page."})


class EventTypeCountSchema(Schema):
    event_type = fields.String()
    events = fields.Integer()
    duplicates = fields.Integer()


class DayCountSchema(Schema):
    day = fields.String(metadata={"description": "UTC day, YYYY-MM-DD, of first delivery."})
    events = fields.Integer()
    duplicates = fields.Integer()
    rejections = fields.Integer()


class ReasonCountSchema(Schema):
    reason = fields.String()
    rejections = fields.Integer()


class LedgerSchema(Schema):
    deliveries = fields.Integer(metadata={"description": "= events + duplicates + rejections."})
    events = fields.Integer()
    duplicates = fields.Integer()
    rejections = fields.Integer()


class StatsSchema(Schema):
    by_event_type = fields.List(fields.Nested(EventTypeCountSchema))
    by_day = fields.List(fields.Nested(DayCountSchema))
    rejections_by_reason = fields.List(fields.Nested(ReasonCountSchema))
    ledger = fields.Nested(LedgerSchema)
    spool_depth = fields.Integer(metadata={"description": "Deliveries waiting in the spool, "
                                                         "not yet in the ledger."})


class ErrorDetailSchema(Schema):
    code = fields.String()
    message = fields.String()
    details = fields.Dict()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema)


class _Duration(fields.String):
    """A length of time: a number and a unit, s m h or d (e.g. 10m); a bare number is seconds."""

    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def __init__(self, metadata=None, **kwargs):
        # The pattern goes into the OpenAPI document; the check itself is in _deserialize
        # (a validator would run on the timedelta it returns).
        super().__init__(metadata={"pattern": r"^[0-9]{1,9}[smhd]?$", **(metadata or {})},
                         **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.fullmatch(r"[0-9]{1,9}[smhd]?", text):
            raise ValidationError("Give a number and a unit, e.g. 10m.")
        unit = text[-1] if text[-1] in self._UNITS else "s"
        return timedelta(seconds=int(text.rstrip("smhd")) * self._UNITS[unit])


class UploadQuerySchema(Schema):
    state = fields.String(validate=validate.OneOf(queries.UPLOAD_STATES),
                          metadata={"description": "Stored state (a notified upload is committed)."})
    pending = fields.Boolean(metadata={
        "description": "Only uploads not failed whose callback has not been stored yet."})
    older_than = _Duration(metadata={"description": "Only uploads started longer ago than "
                                                    "this, e.g. 10m, 2h, 1d."})
    file_id = _text(64, metadata={"description": "FileId VOD gave the upload."})
    source_context = _text(250, metadata={"description": "SourceContext (correlation key), exactly."})
    limit = fields.Integer(load_default=queries.DEFAULT_LIMIT,
                           validate=validate.Range(min=1, max=queries.MAX_LIMIT),
                           metadata={"description": "Rows per page."})
    cursor = _text(2000, metadata={"description": "`next_cursor` of the previous page."})

    _cursor_is_ours = _PageQuerySchema._cursor_is_ours
    _split = _PageQuerySchema._split


class UploadSummarySchema(Schema):
    id = fields.Integer()
    status = fields.String(metadata={"enum": list(queries.UPLOAD_STATUSES), "description":
                                     "state, or notified once VOD's callback is stored."})
    state = fields.String(metadata={"enum": list(queries.UPLOAD_STATES)})
    started_at = fields.DateTime()
    updated_at = fields.DateTime()
    file_name = fields.String()
    file_size = fields.Integer(allow_none=True)
    file_sha256 = fields.String(allow_none=True)
    source_context = fields.String(allow_none=True)
    file_id = fields.String(allow_none=True)
    media_url = fields.String(allow_none=True)
    procedure = fields.String(allow_none=True)
    storage_region = fields.String(allow_none=True)
    sub_app_id = fields.Integer(allow_none=True)
    resumes = fields.Integer(metadata={"description": "Times an interrupted run was resumed."})
    failed_step = fields.String(allow_none=True)
    error_code = fields.String(allow_none=True)
    error_message = fields.String(allow_none=True)
    event_id = fields.Integer(allow_none=True, metadata={
        "description": "The stored NewFileUpload event of this upload, once it came."})


class UploadSchema(UploadSummarySchema):
    file_path = fields.String()
    file_mtime_ns = fields.Integer(allow_none=True)
    source_context_generated = fields.Boolean()
    stored_at = fields.DateTime(allow_none=True)
    committed_at = fields.DateTime(allow_none=True)
    failed_at = fields.DateTime(allow_none=True)
    media_type = fields.String(allow_none=True)
    media_name = fields.String(allow_none=True)
    class_id = fields.Integer(allow_none=True)
    session_context = fields.String(allow_none=True)
    expire_time = fields.String(allow_none=True)
    cover_path = fields.String(allow_none=True)
    cover_url = fields.String(allow_none=True)
    api_region = fields.String(allow_none=True)
    cos_region = fields.String(allow_none=True)
    storage_bucket = fields.String(allow_none=True)
    media_storage_path = fields.String(allow_none=True)
    session_expires_at = fields.DateTime(allow_none=True)
    event = fields.Nested(EventSummarySchema, allow_none=True)


class UploadPageSchema(Schema):
    items = fields.List(fields.Nested(UploadSummarySchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "None on the last page."})


def upload_data(upload, event_id=None, event=None):
    """The upload's columns (never its session key or temporary credentials) and its status."""
    data = {name: getattr(upload, name) for name in _UPLOAD_SHOWN
            if hasattr(upload, name) and name not in ("status", "event", "event_id")}
    event_id = event.id if event is not None else event_id
    data.update(event_id=event_id, event=event, status=queries.upload_status(upload, event_id))
    return data


def _utf8(body):
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


event_query = EventQuerySchema()
rejection_query = RejectionQuerySchema()
event_page = EventPageSchema()
event = EventSchema()
rejection_page = RejectionPageSchema()
rejection = RejectionSchema()
stats = StatsSchema()
upload_query = UploadQuerySchema()
upload_page = UploadPageSchema()
upload = UploadSchema()
# The columns an upload shows: the schema's fields, so credentials (not among them) never are.
_UPLOAD_SHOWN = tuple(upload.fields)
