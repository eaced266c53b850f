"""The events the emulator's VOD produces, and the one place that decides where each goes.

Building a body is pure (media record -> the v3 dict, vod-spec §2). `Dispatcher.publish` is the
only way out: with Mode PUSH an event is pushed, with Mode PULL it waits in the reliable-callback
queue for PullEvents (queue.py); an event whose switch is OFF goes nowhere.
"""
from .queue import PULL, PUSH, EventConfig, EventQueue  # noqa: F401 (PUSH: this module's name for it)
from .state import Media


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
            "VideoDuration": 0.0, "AudioDuration": 0.0, "Md5": media.md5}


def new_file_upload(media: Media) -> dict:
    """The v3 NewFileUpload event for a committed upload (body of the push, without Sign/T)."""
    return {"EventType": "NewFileUpload", "FileUploadEvent": {
        "FileId": media.file_id, "MediaBasicInfo": basic_info(media),
        "ProcedureTaskId": media.procedure_task_id, "ReviewAudioVideoTaskId": "",
        "MetaData": meta_data(media)}}


class Dispatcher:
    """Routes each event VOD produces: recorded in the state, then pushed or queued as the config says."""

    def __init__(self, state, pusher, queue: EventQueue | None = None, config: EventConfig | None = None):
        self.state = state
        self.pusher = pusher
        self.queue = queue if queue is not None else EventQueue()
        self.config = config if config is not None else EventConfig()

    @property
    def mode(self) -> str:
        """PUSH or PULL (ModifyEventConfig's Mode)."""
        return self.config.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.config.mode = value

    def publish(self, event: dict, committing: bool = False) -> int | None:
        """Record and deliver one event; `committing` when an API call is still answering.

        Returns the event's id, or None when its switch is OFF (VOD does not produce it).
        """
        if not self.config.lets_out(event):
            return None
        event_id = self.state.add_event(event)
        if self.config.mode == PULL:
            self.queue.put(event_id, event)
        else:
            self.pusher.submit(event_id, event, committing=committing)
        return event_id

    def enqueue(self, event: dict) -> int:
        """Queue any event body for PullEvents, whatever the mode and switches (tests, benchmarks)."""
        event_id = self.state.add_event(event)
        self.queue.put(event_id, event)
        return event_id


def _category(media_type: str) -> str:
    if media_type in {"mp3", "m4a", "flac", "wav", "amr", "aac", "wma", "mka"}:
        return "Audio"
    if media_type in {"jpg", "jpeg", "png", "gif", "bmp", "tiff", "ai", "cdr", "eps"}:
        return "Image"
    return "Video"
