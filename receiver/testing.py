"""The pytest plugin: replay real VOD callbacks through the receiver in your own tests.

Installed with the package and registered as the `vod_receiver` plugin (setup.cfg, pytest11),
so its fixtures are there in any project that has vod-receiver installed. Every name starts
with `vod_`, so it cannot shadow a project's own `app` or `client`.

    def test_an_upload_reaches_my_handler(vod_replay, vod_sample):
        [event] = vod_replay(vod_sample("v3-push-newfileupload.json"), run_handlers=True)

Fixtures:
- vod_replay(source, run_handlers=False, raise_errors=True): POST callbacks to the receiver's
  callback URL (through the Flask test client) and return the stored events. `source` is raw
  bytes, a file (e.g. saved with `vod-receiver events show ID --raw`), a folder (e.g. written
  by `vod-receiver events export`: its manifest gives the order and Content-Types; otherwise
  every file, by name), or a list of these. With run_handlers=True the registered handlers run on
  each new event at once, as the worker would, and one that fails raises HandlerFailed.
- vod_sample(name): the exact bytes of one of VOD's documented bodies shipped in
  receiver/samples (vod_sample_names lists them).
- vod_app, vod_client: the receiver on a throwaway database, and its test client.
- vod_database_url (default: SQLite in tmp_path; another database is migrated, not emptied),
  vod_config (settings) and vod_registry (the handlers to run; default: the global registry):
  override these to change the setup.
"""
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from . import create_app, db, events, handlers, samples
from .export import MANIFEST, read_manifest
from .handlers import worker
from .models import Event, HandlerAttempt


class CallbackRefused(AssertionError):
    """The receiver refused a replayed callback (the message has its status and error)."""


class HandlerFailed(AssertionError):
    """A handler raised (or timed out) on a replayed event; the message has its traceback."""


class Replayer:
    """Posts callbacks to an app's callback URL and returns the events they stored."""

    def __init__(self, app, client, registry=None):
        self.app, self.client = app, client
        self.registry = registry if registry is not None else handlers.registry
        # As `vod-receiver work` does: handlers named in the settings run too.
        self.registry.load(app.config.get("RECEIVER_HANDLERS", ""))

    def __call__(self, source, *, run_handlers=False, raise_errors=True):
        """POST every callback in `source`; returns the stored events, one per callback.

        With run_handlers, each new event's handlers run before this returns, and a handler that
        fails raises HandlerFailed (unless raise_errors=False: the attempt is only recorded).
        """
        stored = []
        for name, body, content_type in _callbacks(source):
            event_id, new = self._post(name, body, content_type)
            if run_handlers and new:
                self._run_handlers(event_id, raise_errors)
            stored.append(event_id)
        with db.session_factory(self.app)() as session:
            rows = {row.id: row for row in session.scalars(select(Event).where(Event.id.in_(stored)))}
        return [rows[event_id] for event_id in stored]

    def _post(self, name, body, content_type):
        tokens = self.app.config["RECEIVER_CALLBACK_TOKENS"]
        url = f"/callbacks/vod/{tokens[0]}" if tokens else "/callbacks/vod"
        try:
            key = events.parse(body).dedup_key
        except events.Refusal:
            key = None  # refused below, with the receiver's own answer
        with db.session_factory(self.app)() as session:
            known = key is not None and session.scalar(
                select(Event.id).where(Event.dedup_key == key)) is not None
        response = self.client.post(url, data=body, content_type=content_type)
        if response.status_code != 200:
            error = (response.get_json(silent=True) or {}).get("error") or {}
            raise CallbackRefused(f"{name}: the receiver answered {response.status_code} "
                                  f"{error.get('code')}: {error.get('message')}")
        with db.session_factory(self.app)() as session:
            event_id = session.scalar(select(Event.id).where(Event.dedup_key == key))
        return event_id, not known

    def _run_handlers(self, event_id, raise_errors):
        state = worker.process_event(self.app, event_id, self.registry, reason="vod_replay")
        if raise_errors and state in ("failed", "dead"):
            with db.session_factory(self.app)() as session:
                attempt = session.scalars(
                    select(HandlerAttempt).where(HandlerAttempt.event_id == event_id,
                                                 HandlerAttempt.outcome != "succeeded")
                    .order_by(HandlerAttempt.id.desc())).first()
            raise HandlerFailed(f"handler {attempt.handler} {attempt.outcome} on event {event_id}: "
                                f"{attempt.error}\n{attempt.traceback or ''}")


def _callbacks(source):
    # (name, body, content type) of every callback in `source`.
    # VOD sends application/json; an export's manifest says what each callback came with.
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield "bytes", bytes(source), "application/json"
        return
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            entries = read_manifest(path)
            if entries is not None:
                for entry in entries:
                    yield entry["file"], (path / entry["file"]).read_bytes(), entry["content_type"]
                return
            for child in sorted(path.iterdir()):
                if child.is_file() and not child.name.startswith(".") and child.name != MANIFEST:
                    yield child.name, child.read_bytes(), "application/json"
            return
        yield path.name, path.read_bytes(), "application/json"
        return
    for item in source:
        yield from _callbacks(item)


@pytest.fixture
def vod_database_url(tmp_path):
    """The database the receiver of a test uses: by default a new SQLite file in tmp_path."""
    return f"sqlite:///{tmp_path / 'vod-receiver.db'}"


@pytest.fixture
def vod_config():
    """Settings for the test's receiver, on top of the plugin's (override to change them)."""
    return {}


@pytest.fixture
def vod_registry():
    """The handlers vod_replay(run_handlers=True) runs: by default every one registered."""
    return None


@pytest.fixture
def vod_app(vod_database_url, vod_config, tmp_path):
    """The receiver on a migrated database, with no URL token, signature or address check."""
    db.upgrade(vod_database_url)
    app = create_app({
        "TESTING": True,
        "RECEIVER_DATABASE_URL": vod_database_url,
        "RECEIVER_SPOOL_DIR": str(tmp_path / "vod-receiver-spool"),
        "RECEIVER_SPOOL_DRAIN_INTERVAL": 0,
        # Whatever the environment says: a test replays captured callbacks, whose signatures
        # have long expired, from the test client's address.
        "RECEIVER_CALLBACK_TOKENS": "",
        "VOD_SIGN_KEYS": "",
        "RECEIVER_ALLOWED_CIDRS": "",
        **vod_config,
    })
    yield app
    db.dispose(app)


@pytest.fixture
def vod_client(vod_app):
    """A Flask test client of vod_app."""
    return vod_app.test_client()


@pytest.fixture
def vod_replay(vod_app, vod_client, vod_registry):
    """vod_replay(source, run_handlers=False) -> the stored events (see the module's docstring)."""
    return Replayer(vod_app, vod_client, vod_registry)


@pytest.fixture
def vod_sample():
    """vod_sample(name) -> the exact bytes of a VOD sample, e.g. "v3-push-newfileupload.json"."""
    def read(name):
        if name not in _sample_names():
            raise LookupError(f"no VOD sample {name!r}; there are: {', '.join(_sample_names())}")
        return samples.read(name)

    return read


@pytest.fixture
def vod_sample_names():
    """The names of the callback bodies among the samples (v3 push and legacy v2)."""
    return [path.name for path in samples.callback_paths()]


def _sample_names():
    return sorted(path.name for path in samples.FOLDER.glob("*.json"))
