"""Builders for callback bodies and stored events, and the sample bodies shipped in receiver/samples."""
import json
from datetime import datetime, timedelta, timezone

from conftest import SAMPLES

from receiver import db, store
from receiver.store import Delivery

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def sample(name):
    """The exact bytes of one sample file."""
    return (SAMPLES / name).read_bytes()


def callback_samples():
    """Every callback body among the samples, as (id, bytes).

    Push bodies and v2 bodies as they are; each event of a PullEvents response (v3) or of a
    legacy v2 PullEvent response on its own, as the pull consumer and a replay would send it.
    """
    bodies = []
    for path in sorted(SAMPLES.glob("*.json")):
        document = json.loads(path.read_bytes())
        if path.name.startswith(("v3-push-", "v2-")) and "eventList" not in document:
            bodies.append((path.stem, path.read_bytes()))
        for i, event in enumerate((document.get("Response") or {}).get("EventSet") or []):
            bodies.append((f"{path.stem}[{i}]", json.dumps(event).encode()))
        for i, item in enumerate(document.get("eventList") or []):
            bodies.append((f"{path.stem}[{i}]", json.dumps(item["eventContent"]).encode()))
    return bodies


def new_file_upload(file_id="5285890784273533167", source_context="", procedure_task_id="",
                    source_type="Upload", **info):
    """A v3 NewFileUpload body (bytes) like the one VOD sends after an upload."""
    document = json.loads(sample("v3-push-newfileupload.json"))
    task = document["FileUploadEvent"]
    task["FileId"] = task["MediaBasicInfo"]["Vid"] = file_id
    task["ProcedureTaskId"] = procedure_task_id
    task["MediaBasicInfo"]["SourceInfo"] = {"SourceType": source_type, "SourceContext": source_context}
    task["MediaBasicInfo"].update(info)
    return json.dumps(document, ensure_ascii=False).encode()


def deliver(app, body, received_at=None, channel="push", headers=None):
    """Store one delivery of `body` as the receiver would; returns the Outcome."""
    delivery = Delivery(body=body, received_at=received_at or T0, channel=channel,
                        headers=headers or {"Content-Type": "application/json"})
    with db.session_factory(app)() as session, session.begin():
        return store.record(session.connection(), delivery, store.judge(delivery))


def upload(app, n, minutes=None, **fields):
    """Store the NewFileUpload of FileId f<n>, received n minutes (or `minutes`) after T0."""
    fields.setdefault("source_context", f"order-{n}")
    received_at = T0 + timedelta(minutes=n if minutes is None else minutes)
    return deliver(app, new_file_upload(f"f{n}", **fields), received_at)
