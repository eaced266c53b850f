"""Builders for callback bodies, and the sample bodies from ../shared/samples."""
import json

from conftest import SAMPLES


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


def new_file_upload(file_id="5285890784273533167", source_context="", procedure_task_id="", **info):
    """A v3 NewFileUpload body (bytes) like the one VOD sends after an upload."""
    document = json.loads(sample("v3-push-newfileupload.json"))
    event = document["FileUploadEvent"]
    event["FileId"] = file_id
    event["ProcedureTaskId"] = procedure_task_id
    event["MediaBasicInfo"]["SourceInfo"]["SourceContext"] = source_context
    event["MediaBasicInfo"].update(info)
    return json.dumps(document).encode()
