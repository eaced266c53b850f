"""`vod-receiver emulator`: serves until stopped, says what happens, and errors in one line."""
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from emulator_clients import Listener, apply_upload, commit_upload, cos_for, vod_for
from receiver.cli import main


class _Endpoint:
    """Stands in for an Emulator where the SDK helpers only need the address and keys."""

    def __init__(self, port):
        self.secret_id, self.secret_key = "AKIDcli", "cli-secret"
        self.api_endpoint, self.cos_ip, self.cos_port = f"127.0.0.1:{port}", "127.0.0.1", port


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "receiver.cli", "emulator", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_the_command_serves_uploads_pushes_and_stops_on_sigterm(tmp_path):
    listener = Listener()
    process = _start("--port", "0", "--callback-url", listener.url, "--sign-key", "k1",
                     "--secret-id", "AKIDcli", "--secret-key", "cli-secret")
    try:
        first = process.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", first)[1])
        header = [process.stdout.readline() for _ in range(4)]
        assert "SecretId AKIDcli" in header[0] and f"Port={port}" in header[1]
        storage = header[3].split("storage", 1)[1].strip()
        endpoint = _Endpoint(port)
        vod = vod_for(endpoint)
        applied = apply_upload(vod, SourceContext="cli")
        cos_for(endpoint, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"x")
        file_id = commit_upload(vod, applied.VodSessionKey).FileId
        assert listener.json()[0]["FileUploadEvent"]["FileId"] == file_id if listener.wait(1) else False
        assert process.stdout.readline().startswith(f"committed FileId {file_id}: 1 bytes")
        assert process.stdout.readline().startswith("push NewFileUpload #0 attempt 1: delivered HTTP 200")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
        listener.close()
    assert process.returncode == 0, err
    assert not os.path.exists(storage), "its temporary folder is removed"


def test_a_busy_port_is_one_line_not_a_traceback():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = CliRunner().invoke(main, ["emulator", "--port", str(busy.getsockname()[1])])
    assert result.exit_code == 1
    assert re.fullmatch(r"Error: cannot listen on 127\.0\.0\.1:\d+: Address already in use\n", result.output)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/callbacks"])
def test_a_callback_url_that_is_not_http_is_refused(url):
    result = CliRunner().invoke(main, ["emulator", "--port", "0", "--callback-url", url])
    assert result.exit_code == 2 and "--callback-url" in result.output and result.exception.__class__ is SystemExit
