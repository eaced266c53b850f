"""Pushes: the NewFileUpload body, Sign/T, VOD's timeout and retries, and the policy's misbehaviours."""
import hashlib
import json
import threading
import time

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from emulator_clients import apply_upload, commit_upload, cos_for, emu, listener, vod, vod_for  # noqa: F401
from receiver import auth
from receiver.emulator import Emulator
from receiver.models import Event

SIGN_KEY = "EmulatorSignKey42"


def _upload(emulator, vod, body=b"media", **fields):
    """ApplyUpload, PUT, CommitUpload; returns CommitUpload's answer."""
    applied = apply_upload(vod, **fields)
    cos_for(emulator, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=body)
    return commit_upload(vod, applied.VodSessionKey)


def test_commit_pushes_a_signed_new_file_upload_like_vod(emu, vod, listener):
    emu.callback_url, emu.sign_key = listener.url, SIGN_KEY
    context = "用户=7;订单=\"42\""
    committed = _upload(emu, vod, body=b"x" * 1000, SourceContext=context, Procedure="SimpleAesEncryptPreset",
                        MediaName="Animal World")

    (request,) = listener.wait(1)
    assert request["method"] == "POST" and request["path"] == "/callbacks/vod"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.dumps(context, ensure_ascii=False).encode() in request["body"], "as UTF-8, not \\u escapes"
    body = json.loads(request["body"])
    assert body["EventType"] == "NewFileUpload"
    task = body["FileUploadEvent"]
    media = emu.state.media[committed.FileId]
    assert task["FileId"] == committed.FileId
    assert task["ProcedureTaskId"] == media.procedure_task_id != ""
    assert task["MetaData"]["Size"] == 1000
    info = task["MediaBasicInfo"]
    assert (info["Name"], info["Type"], info["MediaUrl"], info["StorageRegion"], info["ClassId"]) == \
        ("Animal World", "mp4", committed.MediaUrl, "ap-guangzhou", 0)
    assert info["SourceInfo"] == {"SourceType": "Upload", "SourceContext": context}
    assert info["CreateTime"].endswith("Z")
    assert body["Sign"] == hashlib.md5(f"{SIGN_KEY}{body['T']}".encode()).hexdigest()
    assert time.time() + 500 < body["T"] < time.time() + 700
    signature = auth.find_signature(body, request["args"])
    assert auth.check_signature(signature, [SIGN_KEY], time.time(), 0) is None
    (push,) = emu.wait_for_pushes(1)
    assert (push.outcome, push.status, push.attempt, push.body) == ("delivered", 200, 1, request["body"])
    assert emu.state.events[0]["FileUploadEvent"]["FileId"] == committed.FileId


def test_sign_and_t_can_go_in_the_query_instead(tmp_path, listener):
    with Emulator(storage_dir=tmp_path, callback_url=listener.url + "?app=1", sign_key=SIGN_KEY,
                  sign_location="query") as emulator:
        _upload(emulator, vod_for(emulator))
        (request,) = listener.wait(1)
    assert "Sign" not in json.loads(request["body"])
    assert request["args"]["app"] == "1"
    assert request["args"]["Sign"] == auth.sign(SIGN_KEY, request["args"]["T"])


def test_without_a_sign_key_there_is_no_sign_or_t(emu, vod, listener):
    emu.callback_url = listener.url
    _upload(emu, vod)
    (body,) = [json.loads(r["body"]) for r in listener.wait(1)]
    assert "Sign" not in body and "T" not in body
    assert listener.requests[0]["args"] == {}


def test_without_a_callback_url_nothing_is_sent_but_the_event_is_recorded(emu, vod):
    committed = _upload(emu, vod)
    (push,) = emu.wait_for_pushes(1)
    assert push.outcome == "no-url"
    assert emu.state.events[0]["FileUploadEvent"]["FileId"] == committed.FileId


def test_drop_loses_the_next_event_only(emu, vod, listener):
    emu.callback_url = listener.url
    emu.push_policy.drop(1)
    first, second = _upload(emu, vod), _upload(emu, vod)
    emu.wait_for_pushes(1, outcome="delivered")
    assert [b["FileUploadEvent"]["FileId"] for b in listener.json()] == [second.FileId]
    assert [(p.outcome, json.loads(p.body or b"{}").get("FileUploadEvent", {}).get("FileId"))
            for p in emu.state.pushes] == [("dropped", None), ("delivered", second.FileId)]
    assert first.FileId in emu.state.media


def test_duplicate_sends_the_same_event_twice(emu, vod, listener):
    emu.callback_url = listener.url
    emu.push_policy.duplicate()
    committed = _upload(emu, vod)
    listener.wait(2)
    bodies = listener.json()
    assert bodies[0] == bodies[1] and bodies[0]["FileUploadEvent"]["FileId"] == committed.FileId
    assert [p.copy for p in emu.wait_for_pushes(2)] == [1, 2]


def test_delay_holds_the_push_back(emu, vod, listener):
    emu.callback_url = listener.url
    emu.push_policy.delay(0.5)
    _upload(emu, vod)
    returned = time.monotonic()
    assert listener.requests == []
    (request,) = listener.wait(1)
    assert request["at"] - returned >= 0.4


def test_reorder_sends_the_next_event_after_the_one_that_follows(emu, vod, listener):
    emu.callback_url = listener.url
    emu.push_policy.reorder()
    first, second = _upload(emu, vod), _upload(emu, vod)
    listener.wait(2)
    assert [b["FileUploadEvent"]["FileId"] for b in listener.json()] == [second.FileId, first.FileId]


def test_reorder_releases_a_held_event_after_max_hold(emu, vod, listener):
    emu.callback_url = listener.url
    emu.push_policy.reorder(max_hold=0.2)
    committed = _upload(emu, vod)
    listener.wait(1)
    assert listener.json()[0]["FileUploadEvent"]["FileId"] == committed.FileId


def test_before_commit_returns_delivers_the_push_before_the_answer(emu, vod, listener):
    emu.callback_url = listener.url
    emu.push_policy.before_commit_returns()
    listener.delay = 0.3
    started = time.monotonic()
    committed = _upload(emu, vod)
    assert time.monotonic() - started >= 0.3
    assert [json.loads(r["body"])["FileUploadEvent"]["FileId"] for r in listener.requests] == [committed.FileId]


def test_a_slow_receiver_times_out_and_gets_three_sends_in_all(tmp_path, listener):
    listener.delay = 0.6
    with Emulator(storage_dir=tmp_path, callback_url=listener.url, push_timeout=0.2) as emulator:
        _upload(emulator, vod_for(emulator))
        pushes = emulator.wait_for_pushes(3)
        time.sleep(0.3)  # a fourth send would have been recorded by now
        assert [(p.attempt, p.outcome) for p in emulator.state.pushes] == \
            [(1, "timeout"), (2, "timeout"), (3, "timeout")]
    assert len(listener.requests) == 3 and pushes[0].body == pushes[2].body


def test_an_error_answer_is_ignored_and_not_retried(emu, vod, listener):
    emu.callback_url, listener.status = listener.url, 500
    _upload(emu, vod)
    (push,) = emu.wait_for_pushes(1)
    assert (push.outcome, push.status) == ("delivered", 500)
    time.sleep(0.2)  # nothing to poll for: a retry, had there been one, would be recorded by now
    assert len(emu.state.pushes) == 1


def test_a_refused_connection_is_recorded_and_not_retried(emu, vod):
    emu.callback_url = "http://127.0.0.1:9/callbacks/vod"
    _upload(emu, vod)
    (push,) = emu.wait_for_pushes(1)
    assert push.outcome == "error" and "Connection" in push.error


def test_wait_for_pushes_says_what_it_saw(emu):
    with pytest.raises(TimeoutError, match="0 of 1 pushes"):
        emu.wait_for_pushes(1, timeout=0.1)


@pytest.fixture
def served_receiver(make_app):
    """The receiver app, signature checks on, served by werkzeug in a thread; yields (app, callback URL)."""
    app = make_app(VOD_SIGN_KEYS=[SIGN_KEY])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}/callbacks/vod"
    server.shutdown()
    server.server_close()


def test_the_receiver_stores_what_the_emulator_pushes(emu, vod, served_receiver, session):
    app, url = served_receiver
    emu.callback_url, emu.sign_key = url, SIGN_KEY
    emu.push_policy.duplicate()
    committed = _upload(emu, vod, SourceContext="上传-1")
    pushes = emu.wait_for_pushes(2)
    assert [p.status for p in pushes] == [200, 200]
    rows = session.execute(select(Event.file_id, Event.source_context, Event.delivery_count)).all()
    assert rows == [(committed.FileId, "上传-1", 2)]
