"""Fixtures for the emulator's tests: the emulator, Tencent's SDK clients pointed at it, a callback listener.

Imported by the test modules (not a conftest.py: tests/ has no packages, so a second conftest
module could collide with another folder's).
"""
import json
import threading
import time

import pytest
from qcloud_cos import CosConfig, CosS3Client
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717 import models, vod_client
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from receiver.emulator import Emulator


@pytest.fixture
def emu(tmp_path):
    """A started emulator with its files under the test's tmp_path."""
    with Emulator(storage_dir=tmp_path / "vod") as emulator:
        yield emulator


def vod_for(emulator, secret_id=None, secret_key=None, method="POST"):
    """A VodClient (the real SDK) talking to `emulator`."""
    cred = credential.Credential(secret_id or emulator.secret_id, secret_key or emulator.secret_key)
    profile = ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=emulator.api_endpoint, reqTimeout=10,
                                                    reqMethod=method))
    return vod_client.VodClient(cred, "ap-guangzhou", profile)


@pytest.fixture
def vod(emu):
    """A VodClient on the emulator with the right key."""
    return vod_for(emu)


def apply_upload(vod, **fields):
    """ApplyUpload with `fields` (MediaType mp4 unless given)."""
    request = models.ApplyUploadRequest()
    request.MediaType = "mp4"
    for name, value in fields.items():
        setattr(request, name, value)
    return vod.ApplyUpload(request)


def commit_upload(vod, session_key):
    """CommitUpload of a session."""
    request = models.CommitUploadRequest()
    request.VodSessionKey = session_key
    return vod.CommitUpload(request)


def cos_for(emulator, applied, retry=0, **overrides):
    """A CosS3Client (the real SDK) on `emulator` with ApplyUpload's temporary key."""
    cert = applied.TempCertificate
    options = dict(Region=applied.StorageRegion, SecretId=cert.SecretId, SecretKey=cert.SecretKey,
                   Token=cert.Token, Scheme="http", IP=emulator.cos_ip, Port=emulator.cos_port)
    options.update(overrides)
    return CosS3Client(CosConfig(**options), retry=retry)


class Listener:
    """A tiny HTTP server standing in for a receiver: records each request, answers after `delay`."""

    def __init__(self):
        self.requests = []
        self.delay = 0.0
        self.status = 200
        self._changed = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}/callbacks/vod"

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        with self._changed:
            self.requests.append({"body": body, "headers": dict(request.headers), "args": dict(request.args),
                                  "path": request.path, "method": request.method, "at": time.monotonic()})
            self._changed.notify_all()
        if self.delay:
            time.sleep(self.delay)
        return Response(b"{}", self.status, content_type="application/json")(environ, start_response)

    def json(self):
        """The bodies received, parsed."""
        return [json.loads(r["body"]) for r in self.requests]

    def wait(self, n, timeout=10.0):
        """Wait until `n` requests arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.requests)} of {n} callbacks after {timeout} s")
                self._changed.wait(left)
        return self.requests

    def close(self):
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


@pytest.fixture
def listener():
    """A callback listener on a free port."""
    server = Listener()
    yield server
    server.close()
