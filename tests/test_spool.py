"""Nothing acknowledged is lost: with the database unavailable, deliveries are spooled and
drained into it once it is back, each stored once."""
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from factories import new_file_upload, sample
from netproxy import Proxy
from receiver import create_app, db, spool
from receiver.models import Event, Rejection

URL = "/callbacks/vod"


class Outage:
    """Takes the test database away and gives it back: a held write lock on SQLite, a cut
    network path on PostgreSQL."""

    def __init__(self, database_url):
        self.url = make_url(database_url)
        self.proxy = None
        self.lock = None
        if self.url.get_backend_name() == "postgresql":
            self.proxy = Proxy((self.url.host or "127.0.0.1", self.url.port or 5432)).start()

    @property
    def app_url(self):
        if self.proxy:
            return self.url.set(host="127.0.0.1", port=self.proxy.port).render_as_string(hide_password=False)
        return self.url.render_as_string(hide_password=False)

    def begin(self):
        if self.proxy:
            self.proxy.cut()
        else:
            self.lock = sqlite3.connect(self.url.database, isolation_level=None)
            self.lock.execute("BEGIN EXCLUSIVE")

    def end(self):
        if self.proxy:
            self.proxy.start()
        else:
            self.lock.rollback()
            self.lock.close()


@pytest.fixture
def outage(app, database_url):
    return Outage(database_url)


@pytest.fixture
def outage_app(app, outage, tmp_path):
    """The receiver reaching its database through `outage`, with a short database timeout."""
    app = create_app({"RECEIVER_DATABASE_URL": outage.app_url, "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"),
                      "RECEIVER_SPOOL_DRAIN_INTERVAL": 0, "RECEIVER_DB_TIMEOUT_MS": 200})
    yield app
    db.dispose(app)


@pytest.fixture
def bounded_app(app, outage, tmp_path):
    """The receiver reaching its database through `outage`, with a 1,000 ms database bound."""
    app = create_app({"RECEIVER_DATABASE_URL": outage.app_url, "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"),
                      "RECEIVER_SPOOL_DRAIN_INTERVAL": 0, "RECEIVER_DB_TIMEOUT_MS": 1000})
    yield app
    db.dispose(app)


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def test_callbacks_survive_a_database_outage_and_are_stored_once(outage_app, outage, session, caplog):
    client = outage_app.test_client()
    client.post(URL, data=new_file_upload("before"))  # opens a pooled connection the outage breaks
    outage.begin()
    bodies = [new_file_upload(str(n), source_context=f"order-{n}") for n in range(5)]
    responses = [client.post(URL, data=body) for body in bodies]
    duplicate = client.post(URL, data=bodies[0])
    bad = client.post(URL, data=b"not json")
    assert [r.status_code for r in responses] + [duplicate.status_code] == [200] * 6
    assert [r.get_json() for r in responses] == [{}] * 5
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_json"
    spool_dir = outage_app.config["RECEIVER_SPOOL_DIR"]
    assert spool.depth(spool_dir) == 7
    # Each failure is logged with the driver's reason, never the values it was writing.
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("database write failed")]
    assert len(failures) == 7
    assert not [m for m in failures if "order-" in m or "FileUploadEvent" in m or "[parameters:" in m]

    outage.end()
    assert spool.drain(outage_app, spool_dir) == 7
    assert spool.depth(spool_dir) == 0
    stored = session.scalars(select(Event).where(Event.file_id != "before").order_by(Event.file_id)).all()
    assert [(e.file_id, e.source_context, e.delivery_count) for e in stored] == [
        (str(n), f"order-{n}", 2 if n == 0 else 1) for n in range(5)]
    assert stored[1].body == bodies[1]
    [rejection] = session.scalars(select(Rejection)).all()
    assert (rejection.reason, rejection.body) == ("invalid_json", b"not json")
    assert spool.drain(outage_app, spool_dir) == 0
    assert _count(session, Event) == 6


def test_drain_keeps_the_spool_while_the_database_is_still_down(outage_app, outage, session):
    client = outage_app.test_client()
    outage.begin()
    try:
        assert client.post(URL, data=sample("v2-newfileupload.json")).status_code == 200
        spool_dir = outage_app.config["RECEIVER_SPOOL_DIR"]
        assert spool.drain(outage_app, spool_dir) == 0
        assert spool.depth(spool_dir) == 1
    finally:
        outage.end()
    assert _count(session, Event) == 0


def test_spool_drains_by_itself_once_the_database_is_back(app, outage, tmp_path, session):
    served = create_app({"RECEIVER_DATABASE_URL": outage.app_url, "RECEIVER_SPOOL_DIR": str(tmp_path / "auto"),
                         "RECEIVER_SPOOL_DRAIN_INTERVAL": 1, "RECEIVER_DB_TIMEOUT_MS": 200})
    client = served.test_client()
    outage.begin()
    assert client.post(URL, data=new_file_upload("auto-1")).status_code == 200
    outage.end()
    deadline = time.monotonic() + 30
    while spool.depth(tmp_path / "auto") and time.monotonic() < deadline:
        time.sleep(0.1)
    served.extensions["receiver.drainer"].stop.set()
    assert spool.depth(tmp_path / "auto") == 0
    assert session.scalar(select(Event.file_id)) == "auto-1"
    db.dispose(served)


def test_spool_drain_command(outage_app, outage, session):
    outage.begin()
    outage_app.test_client().post(URL, data=sample("v3-push-filedeleted.json"))
    runner = outage_app.test_cli_runner()
    assert runner.invoke(args=["spool", "status"]).output.startswith("1 waiting")
    assert runner.invoke(args=["spool", "drain"]).exit_code == 1  # still down: left in place
    outage.end()
    result = runner.invoke(args=["spool", "drain"])
    assert (result.exit_code, result.output.split(",")[0]) == (0, "drained 1")
    assert session.scalar(select(Event.event_type)) == "FileDeleted"


def test_every_callback_is_answered_within_the_database_bound_while_the_database_is_held(bounded_app, outage):
    # The waits for a leader, for the write turn and in SQLite's busy handler used to add up
    # (5.9 s with a 2 s bound); the bound now covers them all. Not a benchmark: 1 s of margin.
    bound = bounded_app.config["RECEIVER_DB_TIMEOUT_MS"] / 1000
    assert bounded_app.test_client().post(URL, data=new_file_upload("before")).status_code == 200
    answers, seconds = [None] * 40, [None] * 40

    def deliver(n):
        client = bounded_app.test_client()
        started = time.monotonic()
        answers[n] = client.post(URL, data=new_file_upload(f"held-{n}")).status_code
        seconds[n] = time.monotonic() - started

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(40)]
    outage.begin()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        outage.end()

    assert answers == [200] * 40
    assert spool.depth(bounded_app.config["RECEIVER_SPOOL_DIR"]) == 40
    assert max(seconds) < bound + 1, sorted(seconds)[-5:]


UNREADABLE = {
    "truncated": b'{"delivery": {"body": "eyJ',
    "not_json": b"\x00\xffnot json at all",
    "older_format": json.dumps({"body": "e30=", "received": "2026-01-01"}).encode(),
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_an_unreadable_spool_file_is_quarantined_and_the_drain_goes_on(outage_app, outage, session, kind):
    outage.begin()
    try:
        assert outage_app.test_client().post(URL, data=new_file_upload("behind")).status_code == 200
    finally:
        outage.end()
    spool_dir = Path(outage_app.config["RECEIVER_SPOOL_DIR"])
    [valid] = spool_dir.glob("*.json")
    corrupt = spool_dir / "20000101T000000000000-corrupt.json"  # sorted before the valid one
    corrupt.write_bytes(UNREADABLE[kind])
    assert spool.status(spool_dir)["depth"] == 2
    assert spool.status(spool_dir)["oldest_age_seconds"] > 365 * 86400

    assert spool.drain(outage_app) == 2

    assert spool.depth(spool_dir) == 0 and not valid.exists()
    assert (spool_dir / "quarantine" / corrupt.name).read_bytes() == UNREADABLE[kind]
    assert session.scalar(select(Event.file_id)) == "behind"
    [rejection] = session.scalars(select(Rejection)).all()
    assert (rejection.reason, rejection.body) == ("spool_unreadable", UNREADABLE[kind])
    assert corrupt.name in rejection.message and rejection.details["file"] == corrupt.name
    assert spool.status(spool_dir) == {"depth": 0, "oldest_age_seconds": None, "quarantined": 1}


def test_spool_state_shows_in_status_metrics_and_readyz(outage_app, outage):
    outage.begin()
    try:
        outage_app.test_client().post(URL, data=new_file_upload("waiting"))
    finally:
        outage.end()
    spool_dir = Path(outage_app.config["RECEIVER_SPOOL_DIR"])
    (spool_dir / "quarantine").mkdir()
    (spool_dir / "quarantine" / "20000101T000000000000-old.json").write_bytes(b"{")
    client = outage_app.test_client()

    ready = client.get("/readyz").get_json()
    scraped = client.get("/metrics").get_data(as_text=True)
    status = outage_app.test_cli_runner().invoke(args=["spool", "status"]).output

    assert ready["spool"]["depth"] == 1 and ready["spool"]["quarantined"] == 1
    assert 0 <= ready["spool"]["oldest_age_seconds"] < 60
    assert "vod_spool_depth 1.0" in scraped and "vod_spool_quarantined 1.0" in scraped
    assert "vod_spool_oldest_age_seconds " in scraped
    assert status.startswith("1 waiting") and "s old; 1 quarantined" in status


def test_spool_files_are_complete_json_records(outage_app, outage):
    outage.begin()
    try:
        body = new_file_upload("file-check")
        outage_app.test_client().post(URL, data=body, headers={"Authorization": "secret"})
        [path] = Path(outage_app.config["RECEIVER_SPOOL_DIR"]).glob("*.json")
        record = json.loads(path.read_text())
        assert record["refusal"] is None
        assert record["delivery"]["headers"]["Authorization"] == "[redacted]"
    finally:
        outage.end()
