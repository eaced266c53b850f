"""Fixtures for the upload tests: the emulator pushing to a served receiver, an Uploader on both.

Imported by the test modules (not a conftest.py: tests/ has no packages, so a second conftest
module could collide with another folder's).
"""
import hashlib
import os
import threading
import time

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from receiver import db, queries
from receiver.emulator import Emulator
from receiver.vod.client import Client, RetryPolicy
from receiver.vod.upload import Uploader

SECRET_ID, SECRET_KEY = "AKIDemulator", "emulator-secret"
# Quick retries: the tests wait for failures, not for backoff.
FAST_RETRY = RetryPolicy(attempts=3, max_wait=0.2, multiplier=0.05)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


@pytest.fixture
def receiver_url(app):
    """The receiver app served on a thread; yields its callback URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/callbacks/vod"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def make_emu(tmp_path, receiver_url):
    """Start an emulator pushing to the receiver, with `overrides` to its settings."""
    started = []

    def make(**overrides):
        emulator = Emulator(secret_id=SECRET_ID, secret_key=SECRET_KEY, callback_url=receiver_url,
                            storage_dir=tmp_path / f"vod{len(started)}", **overrides).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(make_emu):
    """An emulator pushing to the served receiver."""
    return make_emu()


def client_for(emu, cos_endpoint=None, **overrides):
    """A Client on `emu` (1 MB parts, two at a time, quick retries)."""
    settings = dict(secret_id=SECRET_ID, secret_key=SECRET_KEY, api_endpoint=emu.api_endpoint,
                    cos_endpoint=cos_endpoint or emu.cos_endpoint, part_size_mb=1, threads=2,
                    retry=FAST_RETRY)
    settings.update(overrides)
    return Client(**settings)


@pytest.fixture
def uploader(app, emu):
    """An Uploader on the emulator, recording into the test database."""
    return Uploader(client_for(emu), db.session_factory(app))


def write_file(path, size, seed=b"vod"):
    """Write `size` pseudo-random bytes to `path` a chunk at a time; return their SHA-256."""
    digest, block, written = hashlib.sha256(), hashlib.sha512(seed).digest() * 2048, 0
    with open(path, "wb") as file:
        counter = 0
        while written < size:
            # Every 128 KiB differs from the others, so parts cannot pass for one another.
            chunk = (counter.to_bytes(8, "big") + block)[: min(len(block), size - written)]
            file.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            counter += 1
    return digest.hexdigest()


def wait_until(predicate, timeout=15.0, what="the condition"):
    """Poll `predicate` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def linked(app, upload_id, timeout=15.0):
    """Wait until the upload's event is stored; return (Upload, Event)."""
    def found():
        with db.session_factory(app)() as session:
            upload, event = queries.get_upload(session, upload_id)
            return (upload, event) if event is not None else None

    return wait_until(found, timeout, f"the callback of upload {upload_id}")


def get_upload(app, upload_id):
    """(Upload, Event or None) as the admin API sees it now."""
    with db.session_factory(app)() as session:
        return queries.get_upload(session, upload_id)


def sent(emu):
    """How many requests of any kind the emulator received."""
    return sum(emu.state.requests.values())


def cli_env(database_url, emu, cos_endpoint=None, **extra):
    """The environment of a `vod-receiver upload` subprocess aimed at `emu`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENCENTCLOUD_", "VOD_"))}
    env.update(RECEIVER_DATABASE_URL=database_url, TENCENTCLOUD_SECRET_ID=SECRET_ID,
               TENCENTCLOUD_SECRET_KEY=SECRET_KEY, VOD_API_ENDPOINT=emu.api_endpoint,
               VOD_COS_ENDPOINT=cos_endpoint or emu.cos_endpoint, VOD_UPLOAD_PART_SIZE_MB="1",
               VOD_UPLOAD_THREADS="2", **extra)
    return env
