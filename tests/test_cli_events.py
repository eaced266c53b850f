"""`vod-receiver events ...` and `rejections ...`: the admin queries on the command line."""
import json
from datetime import timedelta

import pytest
from factories import T0, deliver, new_file_upload, upload


def test_events_list_finds_an_upload_by_source_context_in_a_table(app, runner):
    upload(app, 1)
    upload(app, 42, procedure_task_id="proc-42")
    result = runner.invoke(args=["events", "list", "--source-context", "order-42"])
    assert result.exit_code == 0, result.output
    header, rule, row = result.output.splitlines()
    assert header.split() == ["id", "received_at", "event_type", "format", "channel", "file_id",
                              "source_context", "procedure_task_id", "delivery_count"]
    assert set(rule) <= {"-", " "}
    assert row.split()[2:] == ["NewFileUpload", "v3", "push", "f42", "order-42", "proc-42", "1"]


def test_ids_are_printed_as_sent(app, runner):
    deliver(app, new_file_upload("000123", source_context="1e5"))
    row = runner.invoke(args=["events", "list"]).output.splitlines()[2].split()
    assert row[5:7] == ["000123", "1e5"]


def test_events_list_json_matches_the_admin_api(app, runner, client):
    for n in range(3):
        upload(app, n)
    app.config["RECEIVER_ADMIN_TOKENS"] = ["t"]
    from receiver import admin

    admin.init_app(app)
    api = client.get("/admin/api/v1/events?limit=2&source_context_prefix=order-",
                     headers={"Authorization": "Bearer t"}).json
    result = runner.invoke(args=["events", "list", "--limit", "2", "--source-context-prefix", "order-",
                                 "--json"])
    assert json.loads(result.output) == api
    assert [item["file_id"] for item in api["items"]] == ["f2", "f1"] and api["next_cursor"]


def test_events_list_pages_with_the_printed_cursor_and_follows_all(app, runner):
    for n in range(5):
        upload(app, n, minutes=0)
    first = runner.invoke(args=["events", "list", "--limit", "2", "--jsonl"])
    assert [json.loads(line)["file_id"] for line in first.stdout.splitlines()] == ["f4", "f3"]
    assert first.stderr.startswith("more: --cursor ")
    table = runner.invoke(args=["events", "list", "--limit", "2"])
    cursor = table.stderr.split("--cursor ")[1].strip()
    second = runner.invoke(args=["events", "list", "--limit", "2", "--cursor", cursor, "--jsonl"])
    assert [json.loads(line)["file_id"] for line in second.stdout.splitlines()] == ["f2", "f1"]
    everything = runner.invoke(args=["events", "list", "--limit", "2", "--all", "--jsonl"])
    assert [json.loads(line)["file_id"] for line in everything.stdout.splitlines()] == [
        "f4", "f3", "f2", "f1", "f0"]
    assert json.loads(runner.invoke(args=["events", "list", "--all", "--limit", "2", "--json"]
                                    ).output)["next_cursor"] is None


@pytest.mark.parametrize("args, option", [
    (["--limit", "0"], "--limit"),
    (["--received-after", "last week"], "--received-after"),
    (["--cursor", "nope"], "--cursor"),
    (["--file-id", ""], "--file-id"),
    (["--format", "v9"], "--format"),
])
def test_events_list_refuses_bad_options_naming_them(runner, args, option):
    result = runner.invoke(args=["events", "list", *args])
    assert result.exit_code == 2
    assert option in result.output


def test_events_show_raw_writes_the_exact_stored_bytes(app, runner):
    body = new_file_upload("f9", source_context="訂單-9")
    stored = deliver(app, body)
    result = runner.invoke(args=["events", "show", str(stored.id), "--raw"])
    assert result.exit_code == 0
    assert result.stdout_bytes == body


def test_events_show_prints_fields_headers_and_body(app, runner):
    stored = upload(app, 7)
    result = runner.invoke(args=["events", "show", str(stored.id)])
    assert result.exit_code == 0
    assert "source_context" in result.output and "order-7" in result.output
    assert "Content-Type" in result.output and '"FileId": "f7"' in result.output
    shown = json.loads(runner.invoke(args=["events", "show", str(stored.id), "--json"]).output)
    assert shown["file_id"] == "f7" and shown["delivery_count"] == 1


@pytest.mark.parametrize("group", ["events", "rejections"])
def test_show_of_an_unknown_id_fails_clearly(runner, group):
    result = runner.invoke(args=[group, "show", "12345"])
    assert result.exit_code == 1
    assert "no " in result.output and "with this id" in result.output


def test_rejections_list_and_show_say_why(app, runner):
    deliver(app, b"\x00\xc3( binary", received_at=T0)
    deliver(app, b"[1]", received_at=T0 + timedelta(minutes=1))
    listed = runner.invoke(args=["rejections", "list", "--reason", "invalid_json", "--jsonl"])
    [line] = listed.stdout.splitlines()
    rejection = json.loads(line)
    assert rejection["reason"] == "invalid_json" and rejection["status_code"] == 400
    table = runner.invoke(args=["rejections", "list"]).output
    assert "not_an_object" in table and "invalid_json" in table
    shown = json.loads(runner.invoke(args=["rejections", "show", str(rejection["id"]), "--json"]).output)
    assert shown["body_encoding"] == "base64" and shown["message"] == rejection["message"]
    raw = runner.invoke(args=["rejections", "show", str(rejection["id"]), "--raw"])
    assert raw.stdout_bytes == b"\x00\xc3( binary"


def test_events_stats_print_the_ledger(app, runner):
    upload(app, 1)
    upload(app, 1)
    deliver(app, b"")
    result = runner.invoke(args=["events", "stats"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == (
        "deliveries 3 = events 1 + duplicates 1 + rejections 1; 0 waiting in the spool")
    assert "NewFileUpload" in result.output and "2026-11-01" in result.output
    data = json.loads(runner.invoke(args=["events", "stats", "--json"]).output)
    assert data["ledger"]["deliveries"] == 3 and data["spool_depth"] == 0
