"""Pure parsing: callback body bytes -> a normalized event (type, keys, fields). No Flask, no DB.

See ../shared/vod-spec.md §2 (v3 NewFileUpload), §5 (legacy v2) and §6 (every v3 event type).
"""
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from . import drift, schemas

# v3 EventType -> the key its data sits under (vod-spec §6). Where the docs disagree with the
# SDK model, every spelling seen is listed, the SDK's first.
DATA_KEYS: dict[str, tuple[str, ...]] = {
    "NewFileUpload": ("FileUploadEvent",),
    "ProcedureStateChanged": ("ProcedureStateChangeEvent",),
    "FileDeleted": ("FileDeleteEvent",),
    "PullComplete": ("PullCompleteEvent",),
    "EditMediaComplete": ("EditMediaCompleteEvent",),
    "SplitMediaComplete": ("SplitMediaCompleteEvent",),
    "ComposeMediaComplete": ("ComposeMediaCompleteEvent",),
    "WechatPublishComplete": ("WechatPublishCompleteEvent", "WechatPublishComplete"),
    "WechatMiniProgramPublishComplete": ("WechatMiniProgramPublishCompleteEvent",),
    "RemoveWatermark": ("RemoveWatermarkCompleteEvent",),
    "RestoreMediaComplete": ("RestoreMediaCompleteEvent",),
    "RebuildMediaComplete": ("RebuildMediaCompleteEvent",),
    "ExtractTraceWatermarkComplete": ("ExtractTraceWatermarkCompleteEvent",),
    "ExtractCopyRightWatermarkComplete": ("ExtractCopyRightWatermarkCompleteEvent",),
    "ReviewAudioVideoComplete": ("ReviewAudioVideoCompleteEvent",),
    "ReduceMediaBitrateComplete": ("ReduceMediaBitrateCompleteEvent",),
    "DescribeFileAttributesComplete": ("DescribeFileAttributesCompleteEvent",),
    "QualityInspectComplete": ("QualityInspectCompleteEvent",),
    "QualityEnhanceComplete": ("QualityEnhanceCompleteEvent",),
    "MediaCastStatusChanged": ("MediaCastStatusChangedEvent",),
    "PersistenceComplete": ("PersistenceCompleteEvent",),
    "ComplexAdaptiveDynamicStreamingComplete": ("ComplexAdaptiveDynamicStreamingCompleteEvent",),
    "ProcessMediaByMPSComplete": ("ProcessMediaByMPSCompleteEvent",),
    "AigcImageTaskComplete": ("AigcImageCompleteEvent",),
    "AigcVideoTaskComplete": ("AigcVideoCompleteEvent",),
    "ExtractBlindWatermarkComplete": ("ExtractBlindWatermarkComplete",),
    "SceneAigcImageCompleteEvent": ("SceneAigcImageCompleteEvent",),
    "ProcessImageAsyncCompleteEvent": ("ProcessImageAsyncCompleteEvent",),
    "CreateAigcAdvancedCustomElementCompleteEvent": ("CreateAigcAdvancedCustomElementCompleteEvent",),
    "CreateAigcCustomVoiceCompleteEvent": ("CreateAigcCustomVoiceCompleteEvent",),
    "DescribeAigcFaceInfoAsyncComplete": ("DescribeAigcFaceInfoAsyncCompleteEvent",),
    # 2017-API-compatible events
    "TranscodeComplete": ("TranscodeCompleteEvent",),
    "ConcatComplete": ("ConcatCompleteEvent",),
    "ClipComplete": ("ClipCompleteEvent",),
    "CreateImageSpriteComplete": ("CreateImageSpriteCompleteEvent",),
    "CreateSnapshotByTimeOffsetComplete": ("SnapshotByTimeOffsetCompleteEvent",),
}
EVENT_TYPES = {key: event_type for event_type, keys in DATA_KEYS.items() for key in keys}
# Top-level keys that never hold event data.
ENVELOPE_KEYS = {"EventType", "EventHandle", "Sign", "T"}


class Refusal(Exception):
    """A callback we will not store as an event; it is recorded as a rejection instead."""

    def __init__(self, reason, message, status=400, details=None, headers=None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.details = details
        self.headers = headers  # for the answer only (Allow on a 405); not recorded

    def to_dict(self):
        return {"reason": self.reason, "message": self.message, "status": self.status,
                "details": self.details}

    @classmethod
    def from_dict(cls, data):
        return cls(data["reason"], data["message"], data["status"], data.get("details"))


@dataclass
class ParsedEvent:
    """A callback body in the receiver's own terms: what to index and how to deduplicate it."""

    format: str
    event_type: str
    data_key: str | None
    dedup_key: str
    fields: dict[str, Any] = field(default_factory=dict)
    unknown_fields: tuple[str, ...] = ()  # see drift.py; v3 only
    # Fields left out (or clipped) because VOD sent them in another shape: schemas.parse_warning.
    warnings: list[dict] = field(default_factory=list)


def parse(body: bytes) -> ParsedEvent:
    """Parse a callback body of either format, or raise Refusal saying what is wrong with it."""
    document = decode_json(body)
    if not isinstance(document, dict):
        raise Refusal("not_an_object", f"The body must be a JSON object, not {_json_kind(document)}.")
    try:
        if "EventType" in document or any(key in EVENT_TYPES for key in document):
            return _parse_v3(document)
        if "eventType" in document or "version" in document:
            return _parse_v2(document)
    except RecursionError:
        # A body nested just shallowly enough to decode can still be too deep to hash or walk.
        raise Refusal("invalid_json", "The body is nested too deeply to process.") from None
    raise Refusal(
        "unknown_format",
        "Not a VOD callback: expected 'EventType' (v3) or 'version' and 'eventType' (legacy v2).",
        status=422,
        details={"keys": sorted(document)[:20]},
    )


def decode_json(body: bytes):
    """Decode a JSON body, refusing what json.loads would take but JSON forbids (NaN, 1e999)."""
    if not body.strip():
        raise Refusal("invalid_json", "The body is empty; a JSON object was expected.")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Refusal("invalid_json", f"The body is not valid UTF-8: {exc}.") from None
    try:
        if text.startswith("\ufeff"):
            # json.loads refuses a second BOM in these words; _DECODER.decode does not check.
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise Refusal("invalid_json", f"The body is not valid JSON: {_short(exc)}.") from None


def canonical_hash(document: dict) -> str:
    """SHA-256 of the event with delivery-only keys and null members removed, keys sorted."""
    content = {k: v for k, v in document.items() if k not in ENVELOPE_KEYS and v is not None}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _parse_v3(document):
    warnings = []
    envelope = _load(schemas.v3_envelope, document, "The v3 envelope", warnings=warnings)
    event_type = envelope.get("EventType")
    data_key = _find_data_key(document, event_type)
    if event_type is None:
        if data_key not in EVENT_TYPES:
            raise Refusal("invalid_event", "'EventType' is missing and the data key does not name it.",
                          status=422, details={"data_key": data_key})
        event_type = EVENT_TYPES[data_key]
    data = document[data_key]
    schema = _V3_SCHEMAS.get(event_type, schemas.task)
    task = _load(schema, data, f"The {event_type} data under '{data_key}'", data_key, warnings)

    info = task.get("MediaBasicInfo") or {}
    source = info.get("SourceInfo") or {}
    meta = task.get("MetaData") or {}
    file_ids = task.get("FileIdSet")
    fields = {
        "event_handle": envelope.get("EventHandle"),
        "task_id": task.get("TaskId"),
        "status": task.get("Status"),
        "file_id": task.get("FileId") or (task.get("Input") or {}).get("FileId") or _only(file_ids),
        "file_ids": file_ids,
        "media_url": info.get("MediaUrl"),
        "source_type": source.get("SourceType"),
        "source_context": source.get("SourceContext"),
        "procedure_task_id": task.get("ProcedureTaskId"),
        "review_audio_video_task_id": task.get("ReviewAudioVideoTaskId"),
        "media_name": info.get("Name"),
        "media_type": info.get("Type"),
        "storage_region": info.get("StorageRegion"),
        "class_id": info.get("ClassId"),
        "media_created_at": info.get("CreateTime"),
        "size": meta.get("Size"),
        "duration": meta.get("Duration"),
        "width": meta.get("Width"),
        "height": meta.get("Height"),
    }
    event = _event("v3", event_type, data_key, document, fields, warnings)
    event.unknown_fields = drift.unknown_fields(event_type, data)
    return event


# Schemas whose identity fields differ from a task's (TaskId).
_V3_SCHEMAS = {"NewFileUpload": schemas.file_upload_task, "FileDeleted": schemas.file_delete_task}
_V2_SCHEMAS = {"NewFileUpload": schemas.v2_new_file_upload, "FileDeleted": schemas.v2_file_deleted}


def _find_data_key(document, event_type):
    for key in DATA_KEYS.get(event_type, ()):
        if isinstance(document.get(key), dict):
            return key
    candidates = [k for k, v in document.items() if k not in ENVELOPE_KEYS and isinstance(v, dict)]
    if len(candidates) == 1:
        return _storable_key(candidates[0])
    if not candidates:
        raise Refusal("invalid_event", f"No event data object found for {event_type or 'the event'}.",
                      status=422, details={"expected_key": list(DATA_KEYS.get(event_type, ()))})
    raise Refusal("invalid_event", "More than one object could be the event data; cannot tell which.",
                  status=422, details={"candidates": sorted(candidates)[:20]})


def _storable_key(key):
    # An unknown event's data key comes from the body, and goes to a 128-character column.
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        key = None
    if key is None or "\x00" in key or len(key) > 128:
        raise Refusal("invalid_event", "The event data key must be at most 128 characters, "
                      "without NUL or lone surrogates.", status=422)
    return key


def _parse_v2(document):
    warnings = []
    envelope = _load(schemas.v2_envelope, document, "The legacy v2 envelope", warnings=warnings)
    event_type = envelope["eventType"]
    schema = _V2_SCHEMAS.get(event_type, schemas.v2_data)
    data = _load(schema, envelope["data"], f"The v2 {event_type} data", "data", warnings)
    meta = data.get("metaData") or {}
    file_ids = [info["fileId"] for info in data.get("fileInfo") or []] or None
    fields = {
        "task_id": data.get("vodTaskId"),
        "status": data.get("status"),
        "file_id": data.get("fileId") or _only(file_ids),
        "file_ids": file_ids,
        "media_url": data.get("fileUrl"),
        "source_type": data.get("sourceType"),
        "source_context": data.get("sourceContext"),
        "procedure_task_id": data.get("procedureTaskId"),
        "media_name": data.get("fileName"),
        "size": _first(data.get("fileSize"), meta.get("size")),
        "duration": _first(data.get("duration"), meta.get("duration")),
        "width": _first(data.get("width"), meta.get("width")),
        "height": _first(data.get("height"), meta.get("height")),
    }
    return _event("v2", event_type, "data", document, fields, warnings)


def _event(fmt, event_type, data_key, document, fields, warnings):
    # VOD push bodies carry no event id and are re-sent on timeout (vod-spec §4), so the key
    # says what makes two deliveries the same event. The format is part of it: an account
    # with both a v2 and a v3 URL gets each upload twice, and both bodies are worth keeping.
    if event_type == "NewFileUpload":
        parts = [fields["file_id"]]
    elif event_type == "ProcedureStateChanged":
        parts = [fields["task_id"], fields["status"], canonical_hash(document)]
    elif event_type == "FileDeleted" and fields["file_ids"]:
        parts = sorted(fields["file_ids"])
    elif fields["task_id"]:
        parts = [fields["task_id"]]
    else:
        parts = [canonical_hash(document)]
    material = "\x1f".join([fmt, event_type, *(str(p) for p in parts)])
    dedup_key = hashlib.sha256(material.encode()).hexdigest()
    return ParsedEvent(fmt, event_type, data_key, dedup_key, fields, warnings=warnings)


def _load(schema, data, what, where=None, warnings=None):
    # Only identity fields can refuse the body; what else is odd is left out and warned of.
    if not isinstance(data, dict):
        raise Refusal("invalid_event", f"{what} must be an object, not {_json_kind(data)}.", status=422)
    try:
        loaded, problems = schema.load_best_effort(data, where or "")
        warnings.extend(problems)
        return loaded
    except ValidationError as exc:
        details = {where: exc.messages} if where else exc.messages
        raise Refusal("invalid_event", f"{what} is invalid: {_first_problem(details)}", status=422,
                      details=details) from None


def _first_problem(messages, path=()):
    if isinstance(messages, dict):
        for key, value in messages.items():
            return _first_problem(value, (*path, str(key)))
    if isinstance(messages, list) and messages:
        return _first_problem(messages[0], path)
    return f"{'.'.join(path)}: {messages}"


def _only(values):
    return values[0] if values and len(values) == 1 else None


def _first(*values):
    return next((v for v in values if v is not None), None)


def _json_kind(value):
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _refuse_constant(name):
    raise ValueError(f"{name} is not allowed in JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# One decoder for every body: json.loads with these hooks would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _short(exc):
    return str(exc)[:200]

