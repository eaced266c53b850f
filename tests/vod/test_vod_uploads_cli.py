"""`vod-receiver upload` and `vod-receiver uploads list|show|reconcile`, and the admin API's uploads."""
import io
import json
import re
import sys

import pytest

from factories import upload as stored_event, upload_record
from receiver import admin
from vod_upload_fixtures import (SECRET_ID, SECRET_KEY, emu, linked, make_emu,  # noqa: F401
                                 receiver_url, sent, write_file)

TOKEN = "uploads-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def vod_env(emu, monkeypatch):
    """The environment `vod-receiver upload` reads, aimed at the emulator."""
    for name, value in {"TENCENTCLOUD_SECRET_ID": SECRET_ID, "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
                        "VOD_API_ENDPOINT": emu.api_endpoint, "VOD_COS_ENDPOINT": emu.cos_endpoint,
                        "VOD_UPLOAD_PART_SIZE_MB": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TENCENTCLOUD_SESSION_TOKEN", raising=False)
    return emu


def test_upload_prints_the_file_id_and_the_correlation_key(app, runner, vod_env, tmp_path):
    path = tmp_path / "clip.mp4"
    write_file(path, 3 * 1024 * 1024)
    result = runner.invoke(args=["upload", str(path), "--source-context", "order-9",
                                 "--media-name", "Clip 9", "--class-id", "3"])
    assert result.exit_code == 0, result.output
    [file_id] = vod_env.state.media
    [row] = json.loads(runner.invoke(args=["uploads", "list", "--json"]).stdout)["items"]
    assert result.stdout.splitlines()[:3] == [
        f"upload {row['id']} committed: FileId {file_id}",
        f"  MediaUrl       {vod_env.state.media[file_id].media_url}",
        "  SourceContext  order-9"]
    media = vod_env.state.media[file_id]
    assert (media.name, media.class_id, media.source_context) == ("Clip 9", 3, "order-9")
    linked(app, row["id"])
    listed = runner.invoke(args=["uploads", "list"])
    header, _, row = listed.output.splitlines()
    assert header.split()[:3] == ["id", "started_at", "status"]
    assert row.split()[2:4] == ["notified", "clip.mp4"] and file_id in row


def test_upload_json_is_the_admin_apis_upload(app, runner, client, vod_env, tmp_path):
    _admin(app)
    path = tmp_path / "clip.mp4"
    write_file(path, 1000)
    result = runner.invoke(args=["upload", str(path), "--json"])
    data = json.loads(result.stdout)
    assert data["state"] == "committed" and data["file_id"] in vod_env.state.media
    assert "temp_secret_key" not in data and "vod_session_key" not in data
    linked(app, data["id"])
    shown = json.loads(runner.invoke(args=["uploads", "show", str(data["id"]), "--json"]).stdout)
    assert shown["status"] == "notified" and shown["event"]["file_id"] == data["file_id"]
    assert client.get(f"/admin/api/v1/uploads/{data['id']}", headers=AUTH).json == shown


@pytest.mark.parametrize("args, says", [
    (["--source-context", "x" * 251], "SourceContextTooLong: SourceContext is 251 characters"),
    (["--media-type", "docx"], "MediaTypeUnsupported: VOD does not take media type 'docx'"),
])
def test_upload_errors_are_one_line_with_a_failed_row(app, runner, vod_env, tmp_path, args, says):
    path = tmp_path / "clip.mp4"
    write_file(path, 1000)
    result = runner.invoke(args=["upload", str(path), *args])
    assert result.exit_code == 1
    listed = json.loads(runner.invoke(args=["uploads", "list", "--json"]).stdout)["items"]
    assert [(u["status"], u["failed_step"]) for u in listed] == [("failed", "check")]
    assert result.output.startswith(f"Error: upload {listed[0]['id']} failed at check: {says}")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert sent(vod_env) == 0


def test_upload_of_a_missing_file_or_without_credentials_says_so(app, runner, vod_env, tmp_path,
                                                                monkeypatch):
    result = runner.invoke(args=["upload", str(tmp_path / "gone.mp4")])
    assert result.exit_code == 1 and result.output.strip().endswith("gone.mp4: no such file")
    path = tmp_path / "clip.mp4"
    write_file(path, 1000)
    monkeypatch.delenv("TENCENTCLOUD_SECRET_KEY")
    result = runner.invoke(args=["upload", str(path)])
    assert result.exit_code == 1
    newest = json.loads(runner.invoke(args=["uploads", "list", "--json"]).stdout)["items"][0]
    assert result.output.strip() == (
        f"Error: upload {newest['id']} failed at check: CredentialsMissing: "
        "TENCENTCLOUD_SECRET_KEY not set: VOD "
        "needs an API key (SecretId and SecretKey, plus TENCENTCLOUD_SESSION_TOKEN for a "
        "temporary key)")
    monkeypatch.setenv("VOD_API_ENDPOINT", "ftp://nowhere")
    result = runner.invoke(args=["upload", str(path)])
    assert result.exit_code == 1 and "VOD_API_ENDPOINT must be host:port" in result.output


def test_a_dropped_callback_is_pending_and_reconcile_says_it_was_lost(app, runner, vod_env, tmp_path):
    vod_env.push_policy.drop(1)
    path = tmp_path / "lost.mp4"
    write_file(path, 1000)
    uploaded = json.loads(runner.invoke(args=["upload", str(path), "--json"]).stdout)
    vod_env.wait_for_pushes(1, outcome="dropped")
    ghost = upload_record(app, 5, file_id="5285890784273533999")  # VOD never heard of it
    pending = json.loads(runner.invoke(args=["uploads", "list", "--pending", "--json"]).stdout)
    assert [u["id"] for u in pending["items"]] == [uploaded["id"], ghost.id]
    # By default only uploads over 10 minutes old: the one just made is left alone.
    assert runner.invoke(args=["uploads", "reconcile"]).output == (
        f"upload {ghost.id} (FileId 5285890784273533999, SourceContext order-5): not in VOD\n")
    result = runner.invoke(args=["uploads", "reconcile", "--older-than", "0s"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"upload {ghost.id} (FileId 5285890784273533999, SourceContext order-5): not in VOD",
        f"upload {uploaded['id']} (FileId {uploaded['file_id']}, SourceContext "
        f"{uploaded['source_context']}): in VOD, callback lost"]
    findings = json.loads(runner.invoke(args=["uploads", "reconcile", "--older-than", "0s",
                                              "--json"]).stdout)["items"]
    assert [f["source_context_matches"] for f in findings] == [None, True]


def test_reconcile_without_credentials_is_one_line(app, runner, monkeypatch):
    upload_record(app, 1)
    monkeypatch.delenv("TENCENTCLOUD_SECRET_ID", raising=False)
    result = runner.invoke(args=["uploads", "reconcile", "--older-than", "0s"])
    assert result.exit_code == 1 and "TENCENTCLOUD_SECRET_ID" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _admin(app):
    app.config["RECEIVER_ADMIN_TOKENS"] = [TOKEN]
    admin.init_app(app)


def test_uploads_listing_filters_and_pages_like_events(app, client, runner):
    _admin(app)
    ids = {n: upload_record(app, n).id for n in range(1, 6)}
    ids[6] = upload_record(app, 6, state="failed").id
    ids[7] = upload_record(app, 7, state="started").id
    for n in (1, 3):
        stored_event(app, n)  # the callbacks of f1 and f3
    api = "/admin/api/v1/uploads"

    def listed(query):
        return [n for item in client.get(f"{api}?{query}", headers=AUTH).json["items"]
                for n, i in ids.items() if i == item["id"]]

    first = client.get(f"{api}?limit=3", headers=AUTH).json
    assert [u["id"] for u in first["items"]] == [ids[7], ids[6], ids[5]]
    second = client.get(f"{api}?limit=3&cursor={first['next_cursor']}", headers=AUTH).json
    assert [(u["id"], u["status"], u["event_id"] is not None) for u in second["items"]] == [
        (ids[4], "committed", False), (ids[3], "notified", True), (ids[2], "committed", False)]
    assert listed("pending=true") == [7, 5, 4, 2]
    assert listed("state=failed") == [6]
    assert listed("source_context=order-3") == [3]
    bad = client.get(f"{api}?older_than=soon", headers=AUTH)
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_parameter"
    cli = json.loads(runner.invoke(args=["uploads", "list", "--pending", "--json"]).stdout)
    assert cli == client.get(f"{api}?pending=true", headers=AUTH).json
    shown = client.get(f"{api}/{ids[3]}", headers=AUTH).json
    assert shown["event"]["file_id"] == "f3" and shown["event"]["source_context"] == "order-3"
    assert client.get(f"{api}/{ids[7] + 1}", headers=AUTH).status_code == 404


def test_older_than_selects_by_start_time(app, runner):
    from datetime import datetime, timezone

    old = upload_record(app, 1, state="started", minutes=0)
    upload_record(app, 2, state="started", started_at=datetime.now(timezone.utc))
    listed = json.loads(runner.invoke(args=["uploads", "list", "--older-than", "10m",
                                            "--json"]).stdout)["items"]
    assert [u["id"] for u in listed] == [old.id]
    # Longer ago than the calendar goes: nothing, not an overflow.
    assert json.loads(runner.invoke(args=["uploads", "list", "--older-than", "999999999d",
                                          "--json"]).stdout)["items"] == []
    assert runner.invoke(args=["uploads", "reconcile", "--older-than", "999999999d"]).exit_code == 0
    bad = runner.invoke(args=["uploads", "list", "--older-than", "ten minutes"])
    assert bad.exit_code == 2 and "--older-than" in bad.output


def test_uploads_show_prints_the_steps_and_the_event(app, runner):
    row = upload_record(app, 3)
    stored_event(app, 3)
    result = runner.invoke(args=["uploads", "show", str(row.id)])
    assert result.exit_code == 0
    assert "notified" in result.output and "\nevent:\n" in result.output
    assert runner.invoke(args=["uploads", "show", str(row.id + 1)]).output.strip() == \
        "Error: no upload with this id"


def test_upload_into_an_unmigrated_database_is_one_line(app, runner, vod_env, tmp_path):
    app.config["RECEIVER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    path = tmp_path / "clip.mp4"
    write_file(path, 1000)
    result = runner.invoke(args=["upload", str(path)])
    assert result.exit_code == 1
    assert result.output == "Error: database error: no such table: uploads\n"
    assert sent(vod_env) == 0


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_bar_shows_bytes_rate_and_time_left_on_a_terminal(monkeypatch):
    from receiver.cli import _progress_bar

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(_progress_bar, "DELAY", 0)
    with _progress_bar(enabled=True) as report:
        for done in range(1, 11):
            report(done * 1024 * 1024, 10 * 1024 * 1024)
        drawn = terminal.getvalue()
    # bytes done/total, [elapsed<time left, rate]
    assert re.search(r"[0-9.]+M?/10\.0M \[\d\d:\d\d<(\?|\d\d:\d\d), *(\?|[0-9.]+M?)B/s\]", drawn)
    with _progress_bar(enabled=False) as report:
        assert report is None  # --json
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # piped
    with _progress_bar(enabled=True) as report:
        assert report is None
