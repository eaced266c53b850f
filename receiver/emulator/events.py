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
            "VideoDuration": 0.0, "AudioDuration": 0.0, "Md5": media.md5 or ""}


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


# Keys whose values make an event a different event (the receiver's dedup keys are built from them).
_IDENTITY_KEYS = {"FileId", "TaskId", "fileId", "vodTaskId", "FileIdSet"}


def sample_bodies() -> list[tuple[str, dict]]:
    """Every callback body among receiver/samples as (name, dict): push and v2 bodies, and each
    event of a PullEvents answer without its EventHandle."""
    import json

    from ..samples import FOLDER

    bodies = []
    for path in sorted(FOLDER.glob("*.json")):
        document = json.loads(path.read_bytes())
        if path.name.startswith(("v3-push-", "v2-")) and "eventList" not in document:
            bodies.append((path.stem, document))
        for i, event in enumerate((document.get("Response") or {}).get("EventSet") or []):
            bodies.append((f"{path.stem}[{i}]", {k: v for k, v in event.items() if k != "EventHandle"}))
    return bodies


def varied(body: dict, n: int) -> dict:
    """A copy of `body` made the n-th distinct event: every FileId and TaskId (v3 and v2) gets "-n".

    Bodies with none of them are told apart by their content hash: those get an "n" member in
    their data instead.
    """
    import copy

    result, changed = copy.deepcopy(body), []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _IDENTITY_KEYS and isinstance(value, str):
                    node[key] = f"{value}-{n}"
                    changed.append(key)
                elif key in _IDENTITY_KEYS and isinstance(value, list):
                    node[key] = [f"{v}-{n}" for v in value]
                    changed.append(key)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(result)
    if not changed:
        result["n"] = n
    return result


def mixed_events(count: int) -> list[dict]:
    """`count` distinct events cycling through every sample type (see varied())."""
    bodies = [body for _name, body in sample_bodies()]
    # The suffix is the event's own number: two samples about the same FileId (a push body and
    # the pull sample of one upload) still make two events.
    return [varied(bodies[i % len(bodies)], i) for i in range(count)]
