"""Marshmallow schemas for the VOD callback formats: v3 task objects and the legacy v2 envelope.

Unknown fields are excluded, not refused: VOD adds fields over time and the raw body keeps them.
Every string that reaches a column is length-limited and free of NUL and lone surrogates, which
PostgreSQL cannot store.
"""
from datetime import timezone

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1


def _storable(value):
    if "\x00" in value:
        raise ValidationError("Must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode (no lone surrogates).") from None


def _utc_representable(value):
    # 9999-12-31T23:59:59-01:00 parses, but is past datetime.max once converted to UTC.
    try:
        value.astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError("Must be a time between the years 1 and 9999 in UTC.") from None


def Text(max_length=None, **kwargs):
    """A string field safe to store in a column of `max_length` characters."""
    validators = [_storable]
    if max_length:
        validators.append(validate.Length(max=max_length))
    return fields.String(validate=validators, allow_none=True, **kwargs)


class IdString(fields.Field):
    """An ID as a string: FileIds exceed 2**53, and one sent as a JSON number keeps every digit."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("Must be a string or an integer.")
        value = str(value)
        _storable(value)
        if not 0 < len(value) <= 64:
            raise ValidationError("Must be 1 to 64 characters long.")
        return value


class Status(fields.Field):
    """Task status: a word (FINISH, PROCESSING) in most events, a number in some (0 = OK)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("Must be a string or an integer.")
        value = str(value)
        _storable(value)
        if len(value) > 64:
            raise ValidationError("Longer than maximum length 64.")
        return value


def Count(maximum=MAX_INT64, **kwargs):
    return fields.Integer(allow_none=True, validate=validate.Range(min=0, max=maximum), **kwargs)


def Seconds(**kwargs):
    return fields.Float(
        allow_none=True, allow_nan=False, validate=validate.Range(min=0, max=1e12), **kwargs
    )


class _Schema(Schema):
    class Meta:
        unknown = EXCLUDE


# --- v3 (PascalCase) -------------------------------------------------------------------------


class MediaSourceSchema(_Schema):
    SourceType = Text(64)
    SourceContext = Text(1000)


class MediaBasicInfoSchema(_Schema):
    Name = Text()
    Type = Text(64)
    MediaUrl = Text()
    StorageRegion = Text(64)
    ClassId = fields.Integer(allow_none=True, validate=validate.Range(min=-MAX_INT64, max=MAX_INT64))
    CreateTime = fields.AwareDateTime(default_timezone=timezone.utc, allow_none=True,
                                      validate=_utc_representable)
    SourceInfo = fields.Nested(MediaSourceSchema, allow_none=True)


class MediaMetaDataSchema(_Schema):
    Size = Count()
    Duration = Seconds()
    Width = Count(MAX_INT32)
    Height = Count(MAX_INT32)


class TaskInputSchema(_Schema):
    FileId = IdString(allow_none=True)


class TaskSchema(_Schema):
    """The fields we index from any v3 task object (FileUploadTask, ProcedureTask, …)."""

    @pre_load
    def _ignore_foreign_input(self, data, **kwargs):
        # `Input` is an object with a FileId in the tasks we index it from; other event types
        # use the name for structures of their own, which the raw body keeps.
        if not isinstance(data.get("Input"), dict):
            data = {k: v for k, v in data.items() if k != "Input"}
        return data

    TaskId = Text(256)
    Status = Status(allow_none=True)
    FileId = IdString(allow_none=True)
    FileIdSet = fields.List(IdString(), allow_none=True, validate=validate.Length(max=10000))
    Input = fields.Nested(TaskInputSchema, allow_none=True)
    MediaBasicInfo = fields.Nested(MediaBasicInfoSchema, allow_none=True)
    MetaData = fields.Nested(MediaMetaDataSchema, allow_none=True)
    ProcedureTaskId = Text(256)
    ReviewAudioVideoTaskId = Text(256)


class FileUploadTaskSchema(TaskSchema):
    """The value of FileUploadEvent: a NewFileUpload must name its file."""

    FileId = IdString(required=True)


class V3EnvelopeSchema(_Schema):
    EventType = Text(128)
    EventHandle = Text(256)


# --- v2 (camelCase, "version": "4.0") ------------------------------------------------------


class V2MetaDataSchema(_Schema):
    size = Count()
    duration = Seconds()
    width = Count(MAX_INT32)
    height = Count(MAX_INT32)


class V2FileInfoSchema(_Schema):
    fileId = IdString(required=True)


class V2DataSchema(_Schema):
    status = Status(allow_none=True)
    vodTaskId = Text(256)
    fileId = IdString(allow_none=True)
    fileInfo = fields.List(fields.Nested(V2FileInfoSchema), allow_none=True,
                           validate=validate.Length(max=10000))
    fileName = Text()
    fileUrl = Text()
    sourceType = Text(64)
    sourceContext = Text(1000)
    procedureTaskId = Text(256)
    duration = Seconds()
    fileSize = Count()
    width = Count(MAX_INT32)
    height = Count(MAX_INT32)
    metaData = fields.Nested(V2MetaDataSchema, allow_none=True)


class V2NewFileUploadSchema(V2DataSchema):
    fileId = IdString(required=True)


class V2EnvelopeSchema(_Schema):
    # "4.0" in every doc sample; the number 4 in one archived PullEvent sample.
    version = fields.Raw(required=True, validate=validate.OneOf(["4.0", "4", 4, 4.0]))
    eventType = fields.String(required=True, validate=[_storable, validate.Length(min=1, max=128)])
    data = fields.Dict(required=True)


file_upload_task = FileUploadTaskSchema()
task = TaskSchema()
v3_envelope = V3EnvelopeSchema()
v2_envelope = V2EnvelopeSchema()
v2_data = V2DataSchema()
v2_new_file_upload = V2NewFileUploadSchema()
