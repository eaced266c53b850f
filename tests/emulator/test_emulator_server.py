"""The emulator as a server: lifecycle, concurrency, streaming large bodies, routing, and the docs' example."""
import hashlib
import os
import re
import socket
import tracemalloc
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from emulator_clients import apply_upload, commit_upload, cos_for, emu, vod, vod_for  # noqa: F401 (fixtures)
from receiver.emulator import Emulator

DOCS = Path(__file__).resolve().parents[2] / "docs" / "emulator.md"


def test_start_and_stop_outside_a_with_block_remove_its_own_folder():
    emulator = Emulator().start()
    root = emulator.state.root
    assert root.is_dir() and emulator.port > 0
    apply_upload(vod_for(emulator))
    emulator.stop()
    assert not root.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emulator.port), timeout=1).close()


def test_a_given_storage_dir_is_kept(tmp_path):
    with Emulator(storage_dir=tmp_path / "keep") as emulator:
        applied = apply_upload(vod_for(emulator))
        cos_for(emulator, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"k")
    assert [p.read_bytes() for p in (tmp_path / "keep" / "objects").iterdir()] == [b"k"]


def test_a_busy_port_raises_oserror():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            Emulator(port=busy.getsockname()[1]).start()


def test_concurrent_uploads_each_get_their_own_media(emu):
    def upload(n):
        vod = vod_for(emu)
        applied = apply_upload(vod, SourceContext=f"job-{n}")
        cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath,
                                         Body=b"%d" % n * 1000)
        return commit_upload(vod, applied.VodSessionKey).FileId

    with ThreadPoolExecutor(max_workers=8) as pool:
        file_ids = list(pool.map(upload, range(16)))
    media = emu.state.media
    assert len(set(file_ids)) == 16
    assert sorted(m.source_context for m in media.values()) == sorted(f"job-{n}" for n in range(16))
    assert all(media[f].size == len(b"%d" % n * 1000) for n, f in enumerate(file_ids))
    assert emu.state.requests["PutObject"] == 16


def test_a_large_body_streams_to_disk_without_being_held_in_memory(emu, vod, tmp_path):
    path = tmp_path / "large.mp4"
    with open(path, "wb") as out:
        for _ in range(32):
            out.write(os.urandom(1024 * 1024))
    applied = apply_upload(vod)
    cos = cos_for(emu, applied)
    tracemalloc.start()
    try:
        with open(path, "rb") as body:  # a file object: requests streams it, so only the server could buffer it
            cos.put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Client and server share this process: half the body is a bound neither could meet if
    # either held it whole. The server reads 256 KiB at a time; the ~10 MB peak seen under
    # pytest is the same for a 64 MB body (outside pytest: under 1 MB).
    assert peak < 16 * 1024 * 1024, f"{peak} bytes at the peak for a 32 MB body"
    obj = emu.state.objects[(applied.StorageBucket, applied.MediaStoragePath.lstrip("/"))]
    assert obj.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and obj.size == 32 * 1024 * 1024


def test_unknown_media_and_unknown_paths_are_404(emu):
    for path in ("/media/123/f0.mp4", "/somewhere"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{emu.cos_endpoint}{path}", timeout=5)
        caught.value.close()
        assert caught.value.code == 404


def test_the_docs_example_runs():
    example = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S)[1]
    exec(compile(example, str(DOCS), "exec"), {})


def test_an_emulator_bug_is_answered_as_internal_error_not_a_broken_connection(emu, vod, monkeypatch, caplog):
    from qcloud_cos.cos_exception import CosServiceError
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    from receiver.emulator import api, cos

    applied = apply_upload(vod)

    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setitem(api.ACTIONS, "ApplyUpload", broken)
    monkeypatch.setitem(cos.OPERATIONS, "PutObject", broken)
    with pytest.raises(TencentCloudSDKException) as caught:
        apply_upload(vod)
    assert caught.value.code == "InternalError"
    with pytest.raises(CosServiceError) as caught:
        cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"x")
    assert (caught.value.get_status_code(), caught.value.get_error_code()) == (500, "InternalError")
    assert [r.exc_info[1].args for r in caplog.records if r.exc_info] == [("bug",), ("bug",)]
