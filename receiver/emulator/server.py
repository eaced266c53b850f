"""The emulator itself: one loopback port serving API 3.0 and COS, started and stopped from Python.

Requests are told apart as VOD's own endpoints would be: a Host of
`<bucket>.cos.<region>.myqcloud.com` is COS, an `X-TC-Action` header (or POST /) is API 3.0, and
GET /media/<FileId>/… serves a committed media file (the MediaUrl CommitUpload returns).
"""
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from . import api, cos
from .events import Dispatcher
from .queue import HANDLE_SECONDS, LONG_POLL_SECONDS, PULL, PUSH, EventConfig, EventQueue
from .push import PushPolicy, Pusher
from .state import State

DEFAULT_REGION = "ap-guangzhou"
DEFAULT_APP_ID = 1250000000


class _QuietHandler(WSGIRequestHandler):
    # werkzeug logs every request to stderr; thousands of UploadPart lines would drown a test's output.
    def log_request(self, *args, **kwargs):
        pass


class Emulator:
    """A fake Tencent Cloud VOD on loopback: API 3.0, COS uploads and pushes to a callback URL."""

    def __init__(self, secret_id: str = "AKIDemulator", secret_key: str = "emulator-secret",
                 callback_url: str | None = None, sign_key: str | None = None,
                 storage_dir: str | Path | None = None, sub_app_id: int | None = None,
                 temp_credential_seconds: int = 1800, host: str = "127.0.0.1", port: int = 0,
                 storage_region: str = DEFAULT_REGION, push_timeout: float = 5.0,
                 sign_location: str = "body", clock=time.time, mode: str = PUSH,
                 event_handle_seconds: float = HANDLE_SECONDS, long_poll_seconds: float = LONG_POLL_SECONDS):
        if sign_location not in ("body", "query"):
            raise ValueError("sign_location must be 'body' or 'query'")
        if mode not in (PUSH, PULL):
            raise ValueError("mode must be 'PUSH' or 'PULL'")
        self.secret_id, self.secret_key = secret_id, secret_key
        self.callback_url, self.sign_key, self.sign_location = callback_url, sign_key, sign_location
        self.sub_app_id = sub_app_id
        self.app_id = sub_app_id or DEFAULT_APP_ID
        self.temp_credential_seconds = temp_credential_seconds
        self.storage_region = storage_region
        self.bucket = f"vodemu{secrets.token_hex(3)}-{self.app_id}"
        self.push_timeout = push_timeout
        self.clock = clock  # replace (e.g. a shifted time.time) to test expiry and skew
        self.host, self._port = host, port
        self._storage_dir = Path(storage_dir) if storage_dir else None
        self._own_dir = None
        self._server = None
        self._thread = None
        self._file_ids = set()
        self._file_id_lock = threading.Lock()
        self.state: State | None = None
        self.push_policy = PushPolicy()
        self.pusher: Pusher | None = None
        self.dispatcher: Dispatcher | None = None
        # Reliable callback (queue.py): how long a pulled event's handle stays valid (VOD: 30 s)
        # and how long PullEvents waits for an event (VOD: 5 s). Tests shorten both.
        self.event_config = EventConfig(mode=mode)
        self.event_handle_seconds = event_handle_seconds
        self.long_poll_seconds = long_poll_seconds
        self.event_queue: EventQueue | None = None

    # Lifecycle

    def start(self) -> "Emulator":
        """Listen (on a free port unless one was given) and serve from a background thread."""
        if self._server is not None:
            return self
        # Bound here, not by werkzeug: on a busy port werkzeug prints and calls sys.exit(1),
        # which a library must not do; this raises OSError for the caller instead.
        listener = socket.create_server((self.host, self._port), backlog=128)
        try:
            self._server = make_server(self.host, self._port, self.wsgi_app, threaded=True,
                                       request_handler=_QuietHandler, fd=listener.fileno())
        finally:
            listener.close()  # werkzeug serves a duplicate of the descriptor
        if self._storage_dir is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="vod-emulator-"))
        self.state = State(self._storage_dir or self._own_dir)
        self.pusher = Pusher(self, self.state, self.push_policy)
        self.event_queue = EventQueue(self.event_handle_seconds)
        self.dispatcher = Dispatcher(self.state, self.pusher, self.event_queue, self.event_config)
        self._server.daemon_threads = True
        self._port = self._server.socket.getsockname()[1]
        self.pusher.start()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="vod-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and pushing; delete the storage folder if the emulator made it."""
        if self._server is None:
            return
        self.event_queue.close()  # a long-polling PullEvents would hold shutdown up to 5 s
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.pusher.stop()
        self._server = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # Where the SDKs should point

    @property
    def port(self) -> int:
        """The port served (known once started)."""
        return self._port

    @property
    def api_endpoint(self) -> str:
        """`host:port` for HttpProfile(protocol="http", endpoint=…)."""
        return f"{self.host}:{self._port}"

    @property
    def cos_ip(self) -> str:
        """IP for CosConfig(IP=…)."""
        return self.host

    @property
    def cos_port(self) -> int:
        """Port for CosConfig(Port=…)."""
        return self._port

    @property
    def cos_endpoint(self) -> str:
        """`http://host:port`, the COS side as one string."""
        return f"http://{self.host}:{self._port}"

    # For tests

    def enqueue(self, event: dict) -> int:
        """Queue any callback body (a dict, without EventHandle) for PullEvents; returns its event id."""
        return self.dispatcher.enqueue(event)

    def wait_for_pushes(self, n: int, timeout: float = 10.0, outcome: str | None = None) -> list:
        """Wait until `n` push records (with `outcome`, if given) exist; return them or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self.state.changed:
            while True:
                found = [p for p in self.state.pushes if outcome is None or p.outcome == outcome]
                left = deadline - time.monotonic()
                if len(found) >= n:
                    return found
                if left <= 0:
                    seen = [(p.event_type, p.outcome) for p in self.state.pushes]
                    raise TimeoutError(f"{len(found)} of {n} pushes after {timeout} s; seen: {seen}")
                self.state.changed.wait(left)

    def wait_for_media(self, n: int = 1, timeout: float = 10.0) -> dict:
        """Wait until `n` media files were committed; return state.media."""
        deadline = time.monotonic() + timeout
        with self.state.changed:
            while len(self.state.media) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.state.media)} of {n} media after {timeout} s")
                self.state.changed.wait(left)
            return self.state.media

    # Used by api.py

    def new_file_id(self) -> str:
        """A FileId like VOD's: a 19-digit number, beyond 2**53 so it only survives as a string."""
        with self._file_id_lock:
            while True:
                file_id = str(secrets.randbelow(2**63 - 2**62) + 2**62)
                if file_id not in self._file_ids:
                    self._file_ids.add(file_id)
                    return file_id

    def media_url(self, file_id: str, key: str) -> str:
        """Where the emulator serves a committed media file (VOD's would be on vod2.myqcloud.com)."""
        return f"{self.cos_endpoint}/media/{file_id}/{quote(key.rsplit('/', 1)[-1])}"

    # The WSGI app

    def wsgi_app(self, environ, start_response):
        """Route a request to COS, API 3.0 or the media download."""
        request = Request(environ)
        match = cos.HOST.fullmatch(request.host or "")
        if match:
            response = cos.handle(self, request, match["bucket"], match["region"])
        elif "X-TC-Action" in request.headers or (request.method == "POST" and request.path == "/"):
            response = api.handle(self, request)
        elif request.method in ("GET", "HEAD") and request.path.startswith("/media/"):
            response = self._media(request)
        else:
            response = Response("Not a VOD emulator endpoint: API 3.0 is POST / with X-TC-Action; "
                                "COS needs Host: <bucket>.cos.<region>.myqcloud.com.\n", 404,
                                content_type="text/plain")
        return response(environ, start_response)

    def _media(self, request):
        self.state.count("MediaDownload")
        _, _, file_id, *_ = request.path.split("/")
        name = request.path.rsplit("/", 1)[-1]
        media = self.state.media.get(file_id)
        keys = [k for k in (media.key, media.cover_key) if k and k.rsplit("/", 1)[-1] == name] if media else []
        obj = self.state.object(media.bucket, keys[0]) if keys else None
        if obj is None:
            return Response("no such media\n", 404, content_type="text/plain")
        return cos.stream_file(obj.path, obj.size, {"Content-Type": obj.content_type or "application/octet-stream",
                                                    "ETag": obj.etag})
