"""Marshmallow schemas for the VOD callback formats: v3 task objects and the legacy v2 envelope.

Unknown fields are excluded, not refused: VOD adds fields over time and the raw body keeps them.
Every string that reaches a column is length-limited and free of NUL and lone surrogates, which
PostgreSQL cannot store.
"""
from collections.abc import Mapping
from datetime import timezone

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, missing, validate

MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1

# Field metadata marking what identifies an event: wrong there, the body is refused.
IDENTITY = {"identity": True}

NUL_MESSAGE = "Must not contain NUL characters."
SURROGATE_MESSAGE = "Must be valid Unicode (no lone surrogates)."

# The fields below check values inside _deserialize rather than through `validate=` lists, and
# report what those lists did, message for message: parsing is on the request path, and
# marshmallow builds and runs an And() of the validators for every field of every load.


def _storage_problem(value):
    """Why PostgreSQL could not store the string `value`, or None if it can."""
    if "\x00" in value:
        return NUL_MESSAGE
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_MESSAGE
    return None


def _storable(value):
    problem = _storage_problem(value)
    if problem:
        raise ValidationError(problem)


class _Checked(fields.Field):
    """A field whose every check is in _deserialize, so a present value needs nothing else."""

    def __init__(self, *args, **kwargs):
        if {"validate", "pre_load", "post_load"} & kwargs.keys():
            raise TypeError(f"{type(self).__name__} checks values in _deserialize.")
        super().__init__(*args, **kwargs)

    def deserialize(self, value, attr=None, data=None, **kwargs):
        if value is missing or value is None:
            # required, allow_none and load_default are marshmallow's to apply.
            return super().deserialize(value, attr, data, **kwargs)
        return self._deserialize(value, attr, data, **kwargs)


class Text(_Checked, fields.String):
    """A string field safe to store in a column of `max_length` characters.

    With `clip`, a string too long but otherwise storable is kept as its first `max_length`
    characters when the field is not valid as sent (see _Schema.load_best_effort).
    """

    def __init__(self, max_length=None, clip=False, **kwargs):
        super().__init__(allow_none=True, **kwargs)
        self.max_length = max_length
        self.clip = clip

    def salvage(self, value):
        """The clipped string, and how it was kept; ValidationError if clipping cannot help."""
        if not (self.clip and isinstance(value, str) and _storage_problem(value) is None):
            raise ValidationError("Cannot be clipped.")
        return value[:self.max_length], f"the first {self.max_length} characters"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            value = super()._deserialize(value, attr, data, **kwargs)  # "Not a valid string."
        problem = _storage_problem(value)
        too_long = self.max_length is not None and len(value) > self.max_length
        if problem or too_long:
            # Both problems at once, as the validator list this replaces reported them.
            problems = [problem] if problem else []
            if too_long:
                problems.append(f"Longer than maximum length {self.max_length}.")
            raise ValidationError(problems)
        return value


class IdString(_Checked, fields.Field):
    """An ID as a string: FileIds exceed 2**53, and one sent as a JSON number keeps every digit."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("Must be a string or an integer.")
        value = str(value)
        _storable(value)
        if not 0 < len(value) <= 64:
            raise ValidationError("Must be 1 to 64 characters long.")
        return value


class Status(_Checked, fields.Field):
    """Task status: a word (FINISH, PROCESSING) in most events, a number in some (0 = OK)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("Must be a string or an integer.")
        value = str(value)
        _storable(value)
        if len(value) > 64:
            raise ValidationError("Longer than maximum length 64.")
        return value


class BoundedInteger(_Checked, fields.Integer):
    """An integer from `minimum` to `maximum`."""

    def __init__(self, minimum, maximum, **kwargs):
        super().__init__(allow_none=True, **kwargs)
        self._range = validate.Range(min=minimum, max=maximum)

    def _deserialize(self, value, attr, data, **kwargs):
        return self._range(super()._deserialize(value, attr, data, **kwargs))


def Count(maximum=MAX_INT64, **kwargs):
    return BoundedInteger(0, maximum, **kwargs)


class Seconds(_Checked, fields.Float):
    """A duration in seconds: finite, 0 to 1e12."""

    _range = validate.Range(min=0, max=1e12)

    def __init__(self, **kwargs):
        super().__init__(allow_none=True, allow_nan=False, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        return self._range(super()._deserialize(value, attr, data, **kwargs))


class UtcDateTime(_Checked, fields.AwareDateTime):
    """A time with an offset (UTC if none) that still lies within datetime's range in UTC."""

    def __init__(self, **kwargs):
        super().__init__(default_timezone=timezone.utc, allow_none=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        # 9999-12-31T23:59:59-01:00 parses, but is past datetime.max once converted to UTC.
        try:
            value.astimezone(timezone.utc)
        except OverflowError:
            raise ValidationError("Must be a time between the years 1 and 9999 in UTC.") from None
        return value


class Object(_Checked, fields.Nested):
    """A nested object, or null."""

    def __init__(self, nested, **kwargs):
        super().__init__(nested, allow_none=True, **kwargs)


class TaskInput(Object):
    """`Input`: an object with a FileId in the tasks we index it from. Other event types use
    the name for structures of their own, which the raw body keeps; those are skipped."""

    def deserialize(self, value, attr=None, data=None, **kwargs):
        if not isinstance(value, dict):
            return missing
        return super().deserialize(value, attr, data, **kwargs)


class OneOrMany(fields.List):
    """A list; a single value where the list belongs is taken as a list of one.

    Tencent's docs show some lists as one object; that is unambiguous, so even an identity
    field is read that way (with a warning) rather than refused.
    """

    def salvage(self, value):
        """[value] loaded as the list, and how it was kept."""
        if value is None or isinstance(value, (list, tuple)):
            raise ValidationError("Not a single value.")
        return self.deserialize([value]), "as a list of one"


class _Schema(Schema):
    """Unknown fields excluded; valid data takes a short way through the fields.

    Marshmallow keeps an error store and builds a closure per field for every load, though a
    callback's values are nearly always valid. Here each field deserializes (and validates)
    its value directly; at the first error, `load` loads the data again marshmallow's own way,
    so every message and detail is the one it gives, and `load_best_effort` goes field by
    field, keeping what it can (the same messages, as warnings, or for IDENTITY fields as the
    error).
    """

    class Meta:
        unknown = EXCLUDE

    def _deserialize(self, data, *, error_store, many=False, partial=None, unknown=RAISE, index=None):
        if not many and partial is None and unknown == EXCLUDE and isinstance(data, Mapping):
            loaded = self._short_way(data)
            if loaded is not None:
                return loaded
        return super()._deserialize(data, error_store=error_store, many=many, partial=partial,
                                    unknown=unknown, index=index)

    def _short_way(self, data):
        loaded = {}
        try:
            for attr_name, field_obj in self.load_fields.items():
                name = attr_name if field_obj.data_key is None else field_obj.data_key
                value = field_obj.deserialize(data.get(name, missing), name, data)
                if value is not missing:
                    loaded[field_obj.attribute or attr_name] = value
            return loaded
        except ValidationError:
            return None

    def load_best_effort(self, data, where=""):
        """(loaded, warnings): every valid field, and a warning for each other one left out.

        Raises ValidationError (marshmallow's messages) only for IDENTITY fields. `where` is the
        dotted path of `data` in the body, the prefix of each warning's field.
        """
        # Valid data, nearly every callback, takes the short way: one pass, no bookkeeping.
        loaded = self._short_way(data)
        if loaded is not None:
            return loaded, []
        return self._salvage(data, f"{where}." if where else "")

    def _salvage(self, data, prefix):
        loaded, warnings, errors = {}, [], {}
        for attr_name, field_obj in self.load_fields.items():
            name = attr_name if field_obj.data_key is None else field_obj.data_key
            raw = data.get(name, missing)
            try:
                value = field_obj.deserialize(raw, name, data)
            except ValidationError as exc:
                identity = field_obj.metadata.get("identity", False)
                value, kept = _fallback(field_obj, raw, prefix + name, warnings, identity)
                if value is missing and identity:
                    errors[name] = exc.messages
                    continue
                if kept is not None:  # None: an object kept in part, its fields warned of
                    warnings.append(parse_warning(prefix + name, exc.messages, kept))
            if value is not missing:
                loaded[field_obj.attribute or attr_name] = value
        if errors:
            raise ValidationError(errors)
        return loaded, warnings


def _fallback(field_obj, raw, path, warnings, identity):
    """(value, how it was kept) for a field whose value failed: missing and "nothing" if lost.

    An identity field only gets the lossless readings (a list of one), never a partial object.
    """
    if not identity and isinstance(field_obj, fields.Nested) and isinstance(raw, Mapping) \
            and isinstance(field_obj.schema, _Schema) and not field_obj.many:
        # An object with some odd fields keeps the others (MediaBasicInfo without its CreateTime).
        try:
            value, inner = field_obj.schema._salvage(raw, f"{path}.")
        except ValidationError:
            return missing, "nothing"
        warnings.extend(inner)
        return value, None
    salvage = getattr(field_obj, "salvage", None)
    if salvage is not None and raw is not missing:
        try:
            return salvage(raw)
        except ValidationError:
            pass
    return missing, "nothing"


def parse_warning(field, messages, stored="nothing"):
    """One entry of an event's parse_warnings: the body path, what was wrong, what was stored."""
    return {"field": field, "problem": _describe(messages)[:300], "stored": stored}


def _describe(messages):
    if isinstance(messages, dict):
        # marshmallow files a wrong-typed object's message under "_schema"; the path says where.
        return "; ".join(_describe(value) if key == "_schema" else f"{key}: {_describe(value)}"
                         for key, value in list(messages.items())[:3])
    if isinstance(messages, (list, tuple)):
        return " ".join(_describe(m) for m in messages[:3])
    return str(messages)


# --- v3 (PascalCase) -------------------------------------------------------------------------


class MediaSourceSchema(_Schema):
    SourceType = Text(64)
    # The uploader's correlation key: an over-long one keeps its first 1,000 characters (the
    # column's size), so prefix lookups still find it; the raw body has it whole.
    SourceContext = Text(1000, clip=True)


class MediaBasicInfoSchema(_Schema):
    Name = Text()
    Type = Text(64)
    MediaUrl = Text()
    StorageRegion = Text(64)
    ClassId = BoundedInteger(-MAX_INT64, MAX_INT64)
    CreateTime = UtcDateTime()
    SourceInfo = Object(MediaSourceSchema)


class MediaMetaDataSchema(_Schema):
    Size = Count()
    Duration = Seconds()
    Width = Count(MAX_INT32)
    Height = Count(MAX_INT32)


class TaskInputSchema(_Schema):
    FileId = IdString(allow_none=True)


class TaskSchema(_Schema):
    """The fields we index from any v3 task object (FileUploadTask, ProcedureTask, …).

    A task event is deduplicated on its TaskId (vod-spec §4): that one must be valid.
    """

    TaskId = Text(256, metadata=IDENTITY)
    Status = Status(allow_none=True)
    FileId = IdString(allow_none=True)
    FileIdSet = OneOrMany(IdString(), allow_none=True, validate=validate.Length(max=10000))
    Input = TaskInput(TaskInputSchema)
    MediaBasicInfo = Object(MediaBasicInfoSchema)
    MetaData = Object(MediaMetaDataSchema)
    ProcedureTaskId = Text(256)
    ReviewAudioVideoTaskId = Text(256)


class FileUploadTaskSchema(TaskSchema):
    """The value of FileUploadEvent: a NewFileUpload must name its file (its dedup key)."""

    FileId = IdString(required=True, metadata=IDENTITY)
    TaskId = Text(256)


class FileDeleteTaskSchema(TaskSchema):
    """The value of FileDeleteEvent: deduplicated on its set of FileIds."""

    FileIdSet = OneOrMany(IdString(), allow_none=True, validate=validate.Length(max=10000),
                          metadata=IDENTITY)


class V3EnvelopeSchema(_Schema):
    EventType = Text(128, metadata=IDENTITY)
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
    vodTaskId = Text(256, metadata=IDENTITY)  # the v2 TaskId
    fileId = IdString(allow_none=True)
    fileInfo = OneOrMany(fields.Nested(V2FileInfoSchema), allow_none=True,
                         validate=validate.Length(max=10000))
    fileName = Text()
    fileUrl = Text()
    sourceType = Text(64)
    sourceContext = Text(1000, clip=True)
    procedureTaskId = Text(256)
    duration = Seconds()
    fileSize = Count()
    width = Count(MAX_INT32)
    height = Count(MAX_INT32)
    metaData = Object(V2MetaDataSchema)


class V2NewFileUploadSchema(V2DataSchema):
    fileId = IdString(required=True, metadata=IDENTITY)
    vodTaskId = Text(256)


class V2FileDeletedSchema(V2DataSchema):
    # The v2 FileIdSet: data.fileInfo[].fileId.
    fileInfo = OneOrMany(fields.Nested(V2FileInfoSchema), allow_none=True,
                         validate=validate.Length(max=10000), metadata=IDENTITY)


class V2EnvelopeSchema(_Schema):
    # "4.0" in every doc sample; the number 4 in one archived PullEvent sample. Not identity:
    # eventType and data say what the event is, and a "4.1" is still worth keeping.
    version = fields.Raw(required=True, validate=validate.OneOf(["4.0", "4", 4, 4.0]))
    eventType = fields.String(required=True, validate=[_storable, validate.Length(min=1, max=128)],
                              metadata=IDENTITY)
    data = fields.Dict(required=True, metadata=IDENTITY)


file_upload_task = FileUploadTaskSchema()
file_delete_task = FileDeleteTaskSchema()
task = TaskSchema()
v3_envelope = V3EnvelopeSchema()
v2_envelope = V2EnvelopeSchema()
v2_data = V2DataSchema()
v2_new_file_upload = V2NewFileUploadSchema()
v2_file_deleted = V2FileDeletedSchema()
