"""Uploads end to end: Tencent's SDKs against the emulator, which pushes to a served receiver.

Every test runs on SQLite and on PostgreSQL (the `app` fixture): the upload is recorded in the
receiver's database and linked, by query, to the NewFileUpload event the receiver stored.
"""
import json
import os
import socket
import time

import pytest
from sqlalchemy import select

from receiver import db
from receiver.models import Event, Upload
from receiver.vod.upload import SOURCE_CONTEXT_MAX, UploadError, UploadRefused, Uploader
from vod_upload_fixtures import (client_for, emu, get_upload, linked, make_emu,  # noqa: F401
                                 receiver_url, sent, uploader, write_file)


def test_a_small_file_goes_in_one_put_and_is_linked_to_its_callback(app, emu, uploader, tmp_path):
    path = tmp_path / "small.mp4"
    sha256 = write_file(path, 200_000)
    result = uploader.upload(path)
    assert result.source_context.startswith("vodr-") and result.record.source_context_generated
    assert emu.state.requests["PutObject"] == 1 and emu.state.requests["UploadPart"] == 0
    media = emu.state.media[result.file_id]
    assert (media.sha256, media.source_context, media.name) == (sha256, result.source_context, "small")
    upload, event = linked(app, result.upload_id)
    assert (upload.state, upload.file_id, upload.file_sha256, upload.file_size) == (
        "committed", result.file_id, sha256, 200_000)
    assert (event.file_id, event.source_context) == (result.file_id, result.source_context)
    # Once committed, nothing that could act for the account is left in the row.
    assert (upload.vod_session_key, upload.temp_secret_key, upload.temp_token) == (None, None, None)
    assert upload.started_at <= upload.stored_at <= upload.committed_at


def test_a_large_file_goes_in_concurrent_parts(app, emu, uploader, tmp_path):
    path = tmp_path / "large.mp4"
    sha256 = write_file(path, 24 * 1024 * 1024 + 12345)
    seen = []
    result = uploader.upload(path, progress=lambda done, total: seen.append((done, total)))
    assert emu.state.requests["InitiateMultipartUpload"] == 1
    assert emu.state.requests["UploadPart"] == 25 and emu.state.requests["PutObject"] == 0
    assert emu.state.media[result.file_id].sha256 == sha256
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    upload, event = linked(app, result.upload_id)
    assert event.file_id == result.file_id and upload.part_size == 1024 * 1024


@pytest.mark.parametrize("source_context", [
    "order-42", "訂單-42 ✓ é 🎬", json.dumps({"user": 7, "name": "Zoë"}, ensure_ascii=False),
    "x" * SOURCE_CONTEXT_MAX, " leading and trailing ", 'quote " back\\slash',
])
def test_source_context_round_trips_byte_for_byte(app, emu, uploader, tmp_path, source_context):
    path = tmp_path / "ctx.mp4"
    write_file(path, 1000)
    result = uploader.upload(path, source_context=source_context)
    assert result.source_context == source_context and not result.record.source_context_generated
    upload, event = linked(app, result.upload_id)
    assert event.source_context == source_context == upload.source_context
    stored = json.loads(event.body)["FileUploadEvent"]["MediaBasicInfo"]["SourceInfo"]
    assert stored["SourceContext"].encode("utf-8") == source_context.encode("utf-8")


def test_a_callback_before_commit_upload_returns_is_still_linked(app, emu, uploader, tmp_path):
    emu.push_policy.before_commit_returns(1)
    path = tmp_path / "early.mp4"
    write_file(path, 5000)
    result = uploader.upload(path)
    with db.session_factory(app)() as session:
        # Stored while CommitUpload was still answering: before the row had its FileId.
        event = session.scalar(select(Event).where(Event.file_id == result.file_id))
        row = session.get(Upload, result.upload_id)
    assert event is not None and event.received_at <= row.committed_at
    assert get_upload(app, result.upload_id)[1].id == event.id


def test_the_link_holds_by_source_context_before_the_file_id_is_known(app, tmp_path):
    from factories import T0, deliver, new_file_upload, upload_record

    row = upload_record(app, 1, state="stored", source_context="ctx-early", minutes=-1)
    other = upload_record(app, 2, state="stored", source_context="ctx-reused", minutes=5)
    # Pulled, not pushed: the channel does not matter.
    deliver(app, new_file_upload("5285890784273533167", source_context="ctx-early"), T0,
            channel="pull")
    deliver(app, new_file_upload("5285890784273533168", source_context="ctx-reused"), T0)
    assert get_upload(app, row.id)[1].file_id == "5285890784273533167"
    # The same key's earlier event (received before this upload started) is not its callback.
    assert get_upload(app, other.id)[1] is None


def test_the_same_source_context_twice_links_each_upload_to_its_own_event(app, emu, uploader, tmp_path):
    results = []
    for n in range(2):
        path = tmp_path / f"same{n}.mp4"
        write_file(path, 3000, seed=bytes([n]))
        results.append(uploader.upload(path, source_context="order-7"))
    events = [linked(app, r.upload_id)[1] for r in results]
    assert [e.file_id for e in events] == [r.file_id for r in results]


def test_a_dropped_push_leaves_the_upload_pending(app, emu, uploader, tmp_path):
    from receiver import queries

    emu.push_policy.drop(1)
    path = tmp_path / "lost.mp4"
    write_file(path, 4000)
    result = uploader.upload(path)
    emu.wait_for_pushes(1, outcome="dropped")
    with db.session_factory(app)() as session:
        page = queries.list_uploads(session, {"pending": True})
        assert [(u.id, e) for u, e in page.items] == [(result.upload_id, None)]


# Failures: each one a clear message and a failed row with its step, code and message.

def _failed(app, upload_id):
    upload, _ = get_upload(app, upload_id)
    assert upload.state == "failed" and upload.failed_at is not None
    assert (upload.vod_session_key, upload.temp_secret_key, upload.temp_token) == (None, None, None)
    return upload


def test_a_wrong_secret_key_fails_at_apply_upload(app, emu, tmp_path):
    path = tmp_path / "a.mp4"
    write_file(path, 1000)
    uploader = Uploader(client_for(emu, secret_key="not-the-key"), db.session_factory(app))
    with pytest.raises(UploadError) as info:
        uploader.upload(path)
    assert (info.value.step, info.value.code) == ("apply", "AuthFailure.SignatureFailure")
    row = _failed(app, info.value.upload_id)
    assert (row.failed_step, row.error_code) == ("apply", "AuthFailure.SignatureFailure")
    assert row.error_message and "not-the-key" not in str(info.value)
    assert emu.state.requests["ApplyUpload"] == 1  # an auth failure is not retried


def test_an_expired_timestamp_fails_at_apply_upload(app, emu, uploader, tmp_path):
    emu.clock = lambda: time.time() + 3600  # the emulator an hour ahead: our timestamp is old
    path = tmp_path / "a.mp4"
    write_file(path, 1000)
    with pytest.raises(UploadError) as info:
        uploader.upload(path)
    assert (info.value.step, info.value.code) == ("apply", "AuthFailure.SignatureExpire")
    assert _failed(app, info.value.upload_id).error_code == "AuthFailure.SignatureExpire"


def test_cos_failing_mid_multipart_fails_at_cos_with_its_code(app, emu, uploader, tmp_path):
    # After five parts the temporary credentials expire (the emulator's clock jumps): COS then
    # refuses every part, as it would a key that ran out mid-upload.
    real = time.time
    emu.clock = lambda: real() + (7200 if emu.state.requests["UploadPart"] >= 5 else 0)
    path = tmp_path / "big.mp4"
    write_file(path, 12 * 1024 * 1024)
    with pytest.raises(UploadError) as info:
        uploader.upload(path)
    row = _failed(app, info.value.upload_id)
    assert row.failed_step == "cos" and info.value.step == "cos"
    # COS's own code for a token past its time, not the SDK's generic "some upload_part fail".
    assert row.error_code == info.value.code == "ExpiredToken"
    assert row.error_message.startswith("COS answered 400: The provided token has expired")
    assert emu.state.requests["CommitUpload"] == 0 and emu.state.media == {}


def test_a_bad_media_type_from_vod_fails_at_apply_upload(app, emu, uploader, tmp_path):
    path = tmp_path / "a.mp4"
    write_file(path, 1000)
    with pytest.raises(UploadError) as info:
        uploader.upload(path, media_type="odg")  # in Tencent's list; this VOD refuses it
    assert (info.value.step, info.value.code) == ("apply", "InvalidParameterValue.MediaType")
    _failed(app, info.value.upload_id)


def _unix_socket(tmp_path):
    path = tmp_path / "a.sock.mp4"
    # The socket file stays when the socket is closed; open() on it fails (ENXIO), even for root.
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
    return path


@pytest.mark.parametrize("case, code, says", [
    ("too-long", "SourceContextTooLong", "SourceContext is 251 characters; VOD takes at most 250"),
    ("missing", "FileNotFound", "nope.mp4: no such file"),
    ("empty", "EmptyFile", "f.mp4 is empty"),
    ("directory", "NotAFile", "dir.mp4 is a directory"),
    ("socket", "FileUnreadable", "a.sock.mp4: "),
    ("unreadable", "FileUnreadable", "f.mp4: permission denied"),
    ("media-type", "MediaTypeUnsupported", "VOD does not take media type 'docx'"),
    ("long-media-type", "MediaTypeUnsupported", "VOD does not take media type 'xxxxxxxx"),
    ("no-extension", "MediaTypeMissing", "README has no extension"),
    ("credentials", "CredentialsMissing", "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY not set"),
])
def test_refusals_are_recorded_and_nothing_is_sent(app, emu, tmp_path, case, code, says):
    path, options, client = tmp_path / "f.mp4", {}, client_for(emu)
    write_file(path, 1000)
    if case == "too-long":
        options["source_context"] = "長" * (SOURCE_CONTEXT_MAX + 1)
    elif case == "missing":
        path = tmp_path / "nope.mp4"
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "directory":
        path = tmp_path / "dir.mp4"
        path.mkdir()
    elif case == "socket":
        path = _unix_socket(tmp_path)
    elif case == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads files whatever their mode (the socket case covers open failing)")
        path.chmod(0)
    elif case == "media-type":
        path = tmp_path / "notes.docx"
        write_file(path, 10)
    elif case == "long-media-type":
        options["media_type"] = "x" * 100
    elif case == "no-extension":
        path = tmp_path / "README"
        write_file(path, 10)
    elif case == "credentials":
        client = client_for(emu, secret_id=None, secret_key=None)
    with pytest.raises(UploadRefused) as info:
        Uploader(client, db.session_factory(app)).upload(path, **options)
    assert info.value.code == code and info.value.step == "check"
    assert says in str(info.value) and "\n" not in str(info.value)
    row = _failed(app, info.value.upload_id)
    assert (row.failed_step, row.error_code, row.file_name) == ("check", code, path.name)
    assert sent(emu) == 0


def test_retry_safe_vod_errors_are_retried_with_backoff(app, emu, tmp_path, monkeypatch):
    # The emulator answers RequestLimitExceeded twice, then normally.
    from receiver.emulator import api

    original, calls = api.ACTIONS["ApplyUpload"], []

    def limited(emulator, params):
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise api.ApiError("RequestLimitExceeded", "Too many requests.")
        return original(emulator, params)

    monkeypatch.setitem(api.ACTIONS, "ApplyUpload", limited)
    path = tmp_path / "a.mp4"
    write_file(path, 1000)
    result = Uploader(client_for(emu), db.session_factory(app)).upload(path)
    assert len(calls) == 3 and result.file_id


def test_cos_5xx_on_parts_is_retried_and_only_those_parts_go_again(app, emu, uploader, tmp_path,
                                                                    monkeypatch):
    # Part 4 gets 503 SlowDown three times (more than the SDK's own retry covers): the upload
    # goes on with backoff, resuming the multipart upload rather than starting it again.
    from receiver.emulator import cos

    original, failures = cos.OPERATIONS["UploadPart"], []

    def flaky(emulator, request, bucket, key):
        if request.args.get("partNumber") == "4" and len(failures) < 3:
            failures.append(request.args["partNumber"])
            raise cos.CosError(503, "SlowDown", "Please reduce your request rate.")
        return original(emulator, request, bucket, key)

    monkeypatch.setitem(cos.OPERATIONS, "UploadPart", flaky)
    path = tmp_path / "flaky.mp4"
    sha256 = write_file(path, 8 * 1024 * 1024)
    result = uploader.upload(path)
    assert emu.state.media[result.file_id].sha256 == sha256
    assert len(failures) == 3
    # 8 parts, plus part 4's three refused tries; the other parts were not sent twice.
    assert emu.state.requests["UploadPart"] == 8 + 3
    assert emu.state.requests["InitiateMultipartUpload"] == 1
    assert get_upload(app, result.upload_id)[0].state == "committed"


def test_a_cover_goes_with_the_media_and_comes_back_as_cover_url(app, emu, uploader, tmp_path):
    video, cover = tmp_path / "talk.mp4", tmp_path / "talk.jpg"
    write_file(video, 2000)
    write_file(cover, 300, seed=b"cover")
    result = uploader.upload(video, cover=cover)
    media = emu.state.media[result.file_id]
    assert result.cover_url and result.cover_url == media.cover_url and media.cover_key
    assert emu.state.read_object(media.bucket, media.cover_key) == cover.read_bytes()
    assert get_upload(app, result.upload_id)[0].cover_url == result.cover_url


def test_a_cover_of_a_type_vod_does_not_take_is_refused(app, emu, uploader, tmp_path):
    video, cover = tmp_path / "talk.mp4", tmp_path / "talk.txt"
    write_file(video, 2000)
    write_file(cover, 10)
    with pytest.raises(UploadRefused) as info:
        uploader.upload(video, cover=cover)
    assert info.value.code == "CoverTypeUnsupported" and sent(emu) == 0


def test_an_unreachable_vod_is_retried_then_fails_at_apply(app, emu, tmp_path, monkeypatch):
    from tencentcloud.vod.v20180717 import vod_client

    from vod_upload_fixtures import FAST_RETRY

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    sends, original = [], vod_client.VodClient.ApplyUpload

    def counted(self, request):
        sends.append(request)
        return original(self, request)

    monkeypatch.setattr(vod_client.VodClient, "ApplyUpload", counted)
    path = tmp_path / "a.mp4"
    write_file(path, 1000)
    uploader = Uploader(client_for(emu, api_endpoint=f"127.0.0.1:{port}"), db.session_factory(app))
    with pytest.raises(UploadError) as info:
        uploader.upload(path)
    assert (info.value.step, info.value.code) == ("apply", "ClientNetworkError")
    assert len(sends) == FAST_RETRY.attempts == 3
    assert _failed(app, info.value.upload_id).error_code == "ClientNetworkError"
