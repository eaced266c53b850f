"""The events the emulator's VOD produces, and the one place that decides where each goes.

Building a body is pure (media record -> the v3 dict, vod-spec §2). `Dispatcher.publish` is the
only way out: today every event is pushed (Mode PUSH); the reliable-callback mode (PULL:
PullEvents/ConfirmEvents) plugs in here by queueing instead of pushing.
"""
from .state import Media

PUSH = "PUSH"


def basic_info(media: Media) -> dict:
    """MediaBasicInfo of a media record, as NewFileUpload and DescribeMediaInfos carry it."""
    return {
        "Name": media.name, "Description": "", "CreateTime": media.create_time,
        "UpdateTime": media.create_time, "ExpireTime": media.expire_time, "ClassId": media.class_id,
        "ClassName": "Other" if media.class_id == 0 else f"Class {media.class_id}",
        "ClassPath": "Other" if media.class_id == 0 else f"Class {media.class_id}",
        "CoverUrl": media.cover_url, "Type": media.type, "MediaUrl": media.media_url, "TagSet": [],
        "StorageRegion": media.storage_region, "StoragePath": "/" + media.key,
        "SourceInfo": {"SourceType": "Upload", "SourceContext": media.source_context},
        "Vid": "", "Category": _category(media.type), "Status": "Normal", "StorageClass": "STANDARD",
    }


def meta_data(media: Media) -> dict:
    """MediaMetaData: the size is real; the emulator does not probe streams, so the rest is empty."""
    return {"Size": media.size, "Container": media.type, "Bitrate": 0, "Height": 0, "Width": 0,
            "Duration": 0.0, "Rotate": 0, "VideoStreamSet": [], "AudioStreamSet": [],
            "VideoDuration": 0.0, "AudioDuration": 0.0, "Md5": media.md5 or ""}


def new_file_upload(media: Media) -> dict:
    """The v3 NewFileUpload event for a committed upload (body of the push, without Sign/T)."""
    return {"EventType": "NewFileUpload", "FileUploadEvent": {
        "FileId": media.file_id, "MediaBasicInfo": basic_info(media),
        "ProcedureTaskId": media.procedure_task_id, "ReviewAudioVideoTaskId": "",
        "MetaData": meta_data(media)}}


class Dispatcher:
    """Routes each event VOD produces: recorded in the state, then pushed (or, later, queued)."""

    def __init__(self, state, pusher):
        self.state = state
        self.pusher = pusher
        self.mode = PUSH

    def publish(self, event: dict, committing: bool = False) -> int:
        """Record and deliver one event; `committing` when an API call is still answering."""
        event_id = self.state.add_event(event)
        # A later PULL mode goes here: `if self.mode == PULL: queue it for PullEvents; return`.
        self.pusher.submit(event_id, event, committing=committing)
        return event_id


def _category(media_type: str) -> str:
    if media_type in {"mp3", "m4a", "flac", "wav", "amr", "aac", "wma", "mka"}:
        return "Audio"
    if media_type in {"jpg", "jpeg", "png", "gif", "bmp", "tiff", "ai", "cdr", "eps"}:
        return "Image"
    return "Video"
