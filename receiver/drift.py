"""Payload drift: which fields of a v3 event's data the receiver does not know. Pure, no Flask.

VOD adds fields over time and the raw body keeps them, so nothing breaks; counting them puts a
change in VOD's payloads on a dashboard before it becomes an incident. The known lists come
from the SDK models (vod-spec §2.1-2.4) and the task fields of §6 and the doc samples.
"""
# Fields of every v3 task object (vod-spec §6).
TASK = frozenset({
    "TaskId", "Status", "ErrCode", "ErrCodeExt", "Message", "FileId", "Progress",
    "SessionContext", "SessionId", "Input", "Output", "MetaData", "MediaBasicInfo",
    "ProcedureTaskId", "ReviewAudioVideoTaskId", "FileName", "FileUrl",
})
KNOWN: dict[str, frozenset] = {
    # FileUploadTask is exact (SDK models.py), not a task: it has no TaskId or Status.
    "NewFileUpload": frozenset({
        "FileId", "MediaBasicInfo", "ProcedureTaskId", "ReviewAudioVideoTaskId", "MetaData",
    }),
    "ProcedureStateChanged": TASK | {
        "MediaProcessResultSet", "AiContentReviewResultSet", "AiAnalysisResultSet",
        "AiRecognitionResultSet", "AiQualityControlTaskResult", "TasksPriority",
        "TasksNotifyMode", "Operator", "OperationType",
    },
    "FileDeleted": frozenset({"FileIdSet", "FileDeleteResultInfo"}),
    "RestoreMediaComplete": TASK | {
        "OriginalStorageClass", "TargetStorageClass", "RestoreTier", "RestoreDay",
    },
    "TranscodeComplete": TASK | {"CoverUrl", "Duration", "PlayInfoSet"},
}
# Objects nested in several task types, checked wherever they appear.
NESTED: dict[str, frozenset] = {
    "MediaBasicInfo": frozenset({
        "Name", "Description", "CreateTime", "UpdateTime", "ExpireTime", "ClassId", "ClassName",
        "ClassPath", "CoverUrl", "Type", "MediaUrl", "SourceInfo", "StorageRegion",
        "StoragePath", "TagSet", "Vid", "Category", "Status", "StorageClass",
    }),
    "MediaBasicInfo.SourceInfo": frozenset({
        "SourceType", "SourceContext", "LiveRecordInfo", "TrtcRecordInfo", "WebPageRecordInfo",
    }),
    "MetaData": frozenset({
        "Size", "Container", "Bitrate", "Height", "Width", "Duration", "VideoDuration",
        "AudioDuration", "Rotate", "VideoStreamSet", "AudioStreamSet", "Md5",
    }),
}
# A body with thousands of new keys must not cost thousands of metric updates.
MAX_REPORTED = 20
# NESTED with each path split once, not on every callback.
_NESTED_KEYS = [(path, path.split("."), known) for path, known in NESTED.items()]


def unknown_fields(event_type: str, data: dict) -> tuple[str, ...]:
    """Dotted paths of the fields in a v3 event's data that its type is not known to carry."""
    unknown = sorted(data.keys() - KNOWN.get(event_type, TASK))
    for path, keys, known in _NESTED_KEYS:
        value = _at(data, keys)
        if isinstance(value, dict):
            new = value.keys() - known
            if new:
                unknown.extend(f"{path}.{key}" for key in sorted(new))
    return tuple(unknown[:MAX_REPORTED])


def _at(data, keys):
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data
