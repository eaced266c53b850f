"""`vod-receiver events export`: stored callbacks as fixture files, exact bytes and a manifest."""
import hashlib
import json
from types import SimpleNamespace

from factories import new_file_upload

from receiver import export


def test_export_writes_each_selected_body_exactly_with_a_manifest(app, client, runner, tmp_path):
    bodies = {}
    for n, ctype in ((1, "application/json"), (2, None)):
        body = new_file_upload(f"f{n}", source_context=f"訂單-{n}").replace(b", ", b",  ")
        assert client.post("/callbacks/vod", data=body, content_type=ctype).status_code == 200
        bodies[f"f{n}"] = (body, ctype)
    client.post("/callbacks/vod", data=bodies["f1"][0])  # a duplicate: still one file
    other = b'{"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["f1"]}}'
    assert client.post("/callbacks/vod", data=other).status_code == 200

    result = runner.invoke(args=["events", "export", "--event-type", "NewFileUpload",
                                 str(tmp_path / "fixtures")])

    assert result.exit_code == 0, result.output
    assert result.output == f"exported 2 events to {tmp_path / 'fixtures'}\n"
    manifest = json.loads((tmp_path / "fixtures" / "manifest.json").read_text())
    assert manifest["selection"] == {"event_type": "NewFileUpload"}
    entries = manifest["files"]
    assert [entry["file_id"] for entry in entries] == ["f1", "f2"]  # oldest first
    for entry in entries:
        body, ctype = bodies[entry["file_id"]]
        assert entry["file"] == f"{entry['id']}-NewFileUpload-{entry['file_id']}.json"
        assert (tmp_path / "fixtures" / entry["file"]).read_bytes() == body
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()
        assert (entry["event_type"], entry["format"], entry["content_type"]) == (
            "NewFileUpload", "v3", ctype)
        assert entry["received_at"].endswith("+00:00")
    assert sorted(p.name for p in (tmp_path / "fixtures").iterdir()) == sorted(
        ["manifest.json", *(entry["file"] for entry in entries)])


def test_export_refuses_a_folder_that_is_not_empty_in_one_line(app, runner, tmp_path):
    (tmp_path / "old.json").write_text("{}")
    result = runner.invoke(args=["events", "export", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path} exists and is not an empty folder\n"


def test_export_of_nothing_writes_an_empty_manifest(app, runner, tmp_path):
    result = runner.invoke(args=["events", "export", "--file-id", "nope", str(tmp_path / "out")])
    assert result.exit_code == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["files"] == []


def test_file_names_keep_only_characters_safe_in_any_file_system():
    row = SimpleNamespace(id=7, event_type="Weird/Type", file_id="../../etc/passwd")
    assert export.file_name(row) == "7-Weird_Type-.._.._etc_passwd.json"
    assert export.file_name(SimpleNamespace(id=8, event_type="FileDeleted", file_id=None)) == \
        "8-FileDeleted.json"
