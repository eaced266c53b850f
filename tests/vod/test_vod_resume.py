"""Resume: `vod-receiver upload` killed mid-multipart (SIGKILL), then run again."""
import json
import signal
import subprocess
import sys
import time

from sqlalchemy import func, select

from netproxy import Proxy
from receiver import db
from receiver.models import Event, Upload
from vod_upload_fixtures import (cli_env, emu, linked, make_emu,  # noqa: F401
                                 receiver_url, wait_until, write_file)

PARTS = 24
SIZE = PARTS * 1024 * 1024


def _upload_command(path):
    return [sys.executable, "-m", "receiver.cli", "upload", str(path), "--json"]


def _parts_stored(emu):
    return sum(len(upload.parts) for upload in emu.state.uploads.values())


def _kill_midway(emu, database_url, path, tmp_path, signum=signal.SIGKILL):
    """Start `vod-receiver upload` through a slow COS link and kill it once parts are in."""
    # About 1.5 MB/s per connection: the 24 parts take several seconds, so the kill lands
    # with some parts stored and some not.
    throttle = Proxy(("127.0.0.1", emu.port), rate=1.5 * 1024 * 1024).start()
    env = cli_env(database_url, emu, cos_endpoint=f"http://127.0.0.1:{throttle.port}")
    with open(tmp_path / "first.log", "wb") as log:
        process = subprocess.Popen(_upload_command(path), cwd=tmp_path, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _parts_stored(emu) >= 6 or process.poll() is not None, 60,
                   "six parts at the emulator")
    finally:
        process.send_signal(signum)
        process.wait(10)
    throttle.cut()
    expected = -signal.SIGKILL if signum == signal.SIGKILL else 130
    assert process.returncode == expected, (tmp_path / "first.log").read_text()
    # A part whose bytes had all arrived may still be being written: wait until none moves.
    last = -1
    while (now := _parts_stored(emu)) != last:
        last = now
        time.sleep(0.3)
    return now


def test_a_killed_upload_resumes_sending_only_the_missing_parts(app, emu, database_url, tmp_path):
    path = tmp_path / "movie.mp4"
    sha256 = write_file(path, SIZE)
    stored_before = _kill_midway(emu, database_url, path, tmp_path)
    assert 0 < stored_before < PARTS
    with db.session_factory(app)() as session:
        [row] = session.scalars(select(Upload)).all()
    assert row.state == "started" and row.vod_session_key is not None
    sent_before = emu.state.requests["UploadPart"]

    again = subprocess.run(_upload_command(path), cwd=tmp_path, capture_output=True,
                           env=cli_env(database_url, emu), timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert f"upload {row.id}: resuming the interrupted upload of movie.mp4" in again.stderr.decode()
    result = json.loads(again.stdout)
    # Only the parts COS did not have went again; one ApplyUpload, one FileId, one event.
    assert emu.state.requests["UploadPart"] - sent_before == PARTS - stored_before
    assert emu.state.requests["ApplyUpload"] == 1 and emu.state.requests["CommitUpload"] == 1
    assert list(emu.state.media) == [result["file_id"]]
    assert emu.state.media[result["file_id"]].sha256 == sha256
    upload, event = linked(app, row.id)
    assert (result["id"], upload.resumes, upload.state) == (row.id, 1, "committed")
    assert upload.temp_secret_key is None and event.file_id == result["file_id"]
    with db.session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1
        assert session.scalar(select(func.count()).select_from(Upload)) == 1


def test_a_killed_upload_whose_session_expired_starts_over_and_says_so(
        app, make_emu, database_url, tmp_path):
    # Credentials good for 30 s: less than the margin a resume needs, so the re-run must not
    # reuse them.
    emu = make_emu(temp_credential_seconds=30)
    path = tmp_path / "movie.mp4"
    write_file(path, SIZE)
    _kill_midway(emu, database_url, path, tmp_path)
    again = subprocess.run(_upload_command(path), cwd=tmp_path, capture_output=True,
                           env=cli_env(database_url, emu), timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert "its VOD session expired; starting over" in again.stderr.decode()
    result = json.loads(again.stdout)
    with db.session_factory(app)() as session:
        first, second = session.scalars(select(Upload).order_by(Upload.id)).all()
    assert (first.state, first.failed_step, first.error_code) == ("failed", "resume", "SessionExpired")
    assert first.temp_secret_key is None and first.vod_session_key is None
    assert (second.id, second.state) == (result["id"], "committed")
    # The correlation key stays the upload's: the new session carries the same one.
    assert second.source_context == first.source_context
    assert emu.state.requests["ApplyUpload"] == 2
    assert linked(app, second.id)[1].file_id == result["file_id"]


def test_a_cos_failure_in_the_command_is_one_line_on_stderr(app, emu, database_url, tmp_path):
    # Served by a real process: the SDKs' own error logging (with tracebacks) must not reach
    # the terminal; the one line names the upload, the step and COS's code.
    real = time.time
    emu.clock = lambda: real() + (7200 if emu.state.requests["UploadPart"] >= 3 else 0)
    path = tmp_path / "movie.mp4"
    write_file(path, 6 * 1024 * 1024)
    done = subprocess.run([sys.executable, "-m", "receiver.cli", "upload", str(path)], cwd=tmp_path,
                          capture_output=True, env=cli_env(database_url, emu), timeout=120)
    assert done.returncode == 1 and done.stdout == b""
    [line] = done.stderr.decode().splitlines()
    with db.session_factory(app)() as session:
        [row] = session.scalars(select(Upload)).all()
    assert line.startswith(f"Error: upload {row.id} failed at cos: ExpiredToken: COS answered 400")
    assert (row.state, row.failed_step, row.error_code) == ("failed", "cos", "ExpiredToken")


def test_ctrl_c_stops_at_once_and_the_re_run_resumes(app, emu, database_url, tmp_path):
    # SIGINT is Ctrl-C: the command must not wait for the SDK's threads to send every part.
    path = tmp_path / "movie.mp4"
    write_file(path, SIZE)
    stored_before = _kill_midway(emu, database_url, path, tmp_path, signal.SIGINT)
    assert "interrupted: run the same command again to resume" in (
        tmp_path / "first.log").read_text()
    assert stored_before < PARTS
    sent_before = emu.state.requests["UploadPart"]
    again = subprocess.run(_upload_command(path), cwd=tmp_path, capture_output=True,
                           env=cli_env(database_url, emu), timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert emu.state.requests["UploadPart"] - sent_before == PARTS - stored_before
    assert emu.state.requests["ApplyUpload"] == 1
