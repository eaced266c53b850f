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


def upload_record(app, n, state="committed", file_id=None, minutes=None, **fields):
    """Store an `uploads` row for file n (FileId f<n> once committed), started n minutes after T0."""
    from receiver.models import Upload

    started_at = T0 + timedelta(minutes=n if minutes is None else minutes)
    values = dict(state=state, started_at=started_at, updated_at=started_at,
                  file_path=f"/videos/{n}.mp4", file_name=f"{n}.mp4", file_size=1000 + n,
                  file_sha256=f"{n:064x}", source_context=f"order-{n}", media_type="mp4",
                  source_context_generated=False, resumes=0)
    if state == "committed":
        values.update(file_id=file_id or f"f{n}", committed_at=started_at,
                      media_url=f"http://vod.example/{n}.mp4")
    if state == "failed":
        values.update(failed_step="apply", error_code="AuthFailure.SignatureFailure",
                      error_message="bad signature", failed_at=started_at)
    values.update(fields)
    with db.session_factory(app)() as session, session.begin():
        row = Upload(**values)
        session.add(row)
    return row
