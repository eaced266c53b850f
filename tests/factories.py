"""Builders for stored events and rejections, through the receiver's own store."""
import json
from datetime import datetime, timedelta, timezone

from conftest import SAMPLES

from receiver import db, store
from receiver.store import Delivery

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def upload_body(file_id, source_context="", procedure_task_id="", source_type="Upload"):
    """A v3 NewFileUpload body (the documented sample) for `file_id`."""
    document = json.loads((SAMPLES / "v3-push-newfileupload.json").read_text())
    task = document["FileUploadEvent"]
    task["FileId"] = task["MediaBasicInfo"]["Vid"] = file_id
    task["ProcedureTaskId"] = procedure_task_id
    task["MediaBasicInfo"]["SourceInfo"] = {"SourceType": source_type, "SourceContext": source_context}
    return json.dumps(document, ensure_ascii=False).encode()


def deliver(app, body, received_at=None, channel="push", headers=None):
    """Store one delivery of `body` as the receiver would; returns the Outcome."""
    delivery = Delivery(body=body, received_at=received_at or T0, channel=channel,
                        headers=headers or {"Content-Type": "application/json"})
    with db.session_factory(app)() as session, session.begin():
        return store.record(session, delivery, store.judge(delivery))


def upload(app, n, minutes=None, **fields):
    """Store the NewFileUpload of FileId f<n>, received n minutes (or `minutes`) after T0."""
    fields.setdefault("source_context", f"order-{n}")
    received_at = T0 + timedelta(minutes=n if minutes is None else minutes)
    return deliver(app, upload_body(f"f{n}", **fields), received_at)
