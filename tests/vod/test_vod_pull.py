"""The pull consumer against the emulator, on SQLite and PostgreSQL: every event stored exactly
once and confirmed only once durable, through a crash, a database outage and a second consumer."""
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from factories import new_file_upload
from receiver import create_app, db, events, spool
from receiver.emulator import Emulator
from receiver.emulator.events import mixed_events
from receiver.models import Event, Rejection
from receiver.vod.client import Client, RetryPolicy
from receiver.vod.pull import Consumer, ConsumerError, event_bodies
from test_spool import Outage
from vod_upload_fixtures import SECRET_ID, SECRET_KEY, wait_until

FAST_RETRY = RetryPolicy(attempts=3, max_wait=0.2, multiplier=0.05)


@pytest.fixture
def emu(tmp_path):
    """An emulator in Mode PULL: handles expire after 1 s, PullEvents waits at most 0.3 s."""
    with Emulator(secret_id=SECRET_ID, secret_key=SECRET_KEY, storage_dir=tmp_path / "vod",
                  mode="PULL", event_handle_seconds=1.0, long_poll_seconds=0.3) as emulator:
        yield emulator


def _client(emu, **overrides):
    return Client(SECRET_ID, SECRET_KEY, api_endpoint=emu.api_endpoint, retry=FAST_RETRY, **overrides)


def _consumer(app, emu, **overrides):
    return Consumer(app, _client(emu), max_backoff=0.2, **overrides)


def _dedup_key(body: dict) -> str:
    return events.parse(json.dumps(body).encode()).dedup_key


def _stored(app):
    """{dedup_key: delivery_count} of every stored event."""
    with db.session_factory(app)() as session:
        return dict(session.execute(select(Event.dedup_key, Event.delivery_count)).all())


def _spooled_keys(app):
    keys = set()
    for path in Path(app.config["RECEIVER_SPOOL_DIR"]).glob("*.json"):
        body = spool.store.Delivery.from_dict(json.loads(path.read_text())["delivery"]).body
        keys.add(events.parse(body).dedup_key)
    return keys


def _env(database_url, emu, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENCENTCLOUD_", "VOD_", "RECEIVER_"))}
    env.update(RECEIVER_DATABASE_URL=database_url, TENCENTCLOUD_SECRET_ID=SECRET_ID,
               TENCENTCLOUD_SECRET_KEY=SECRET_KEY, VOD_API_ENDPOINT=emu.api_endpoint,
               RECEIVER_LOG_FORMAT="json", RECEIVER_SPOOL_DRAIN_INTERVAL="0", **extra)
    return env


def _pull_process(database_url, emu, tmp_path, name="pull", args=(), **extra):
    return subprocess.Popen([sys.executable, "-m", "receiver.cli", "pull", *args],
                            env=_env(database_url, emu, RECEIVER_SPOOL_DIR=str(tmp_path / f"{name}-spool"), **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_1000_events_of_every_type_are_stored_exactly_once_and_all_confirmed(app, emu):
    bodies = mixed_events(1000)
    for body in bodies:
        emu.enqueue(body)

    totals = _consumer(app, emu).run(workers=2, until_empty=True)

    assert (totals.events, totals.confirmed) == (1000, 1000)
    stored = _stored(app)
    assert set(stored) == {_dedup_key(b) for b in bodies} and len(stored) == 1000
    assert set(stored.values()) == {1}
    assert emu.event_queue.snapshot() == {"depth": 0, "in_flight": 0, "confirmed": 1000,
                                          "deliveries": 1000, "redeliveries": 0}
    with db.session_factory(app)() as session:
        # v3 events keep their EventHandle (a v2 body has no such field: its parser keeps none).
        handles = session.scalars(select(Event.event_handle).where(Event.format == "v3")).all()
        channels = set(session.scalars(select(Event.channel)).all())
    assert len(handles) > 500 and len(set(handles)) == len(handles) and None not in handles
    assert channels == {"pull"}


def test_a_batch_is_one_transaction(app, emu, monkeypatch):
    commits = []
    writer = db.writer(app)
    connection = writer._connect()
    monkeypatch.setattr(type(connection), "commit",
                        lambda self, _orig=type(connection).commit: (commits.append(1), _orig(self))[1])
    for body in mixed_events(16):
        emu.enqueue(body)
    assert _consumer(app, emu).run(max_batches=1).events == 16
    assert len(commits) == 1


def test_a_bad_event_is_recorded_as_a_rejection_and_still_confirmed(app, emu):
    emu.enqueue({"EventType": "NewFileUpload", "FileUploadEvent": "not an object"})
    emu.enqueue(mixed_events(1)[0])

    totals = _consumer(app, emu).run(until_empty=True)

    assert totals.outcomes == {"rejected": 1, "stored": 1} and totals.confirmed == 2
    with db.session_factory(app)() as session:
        [rejection] = session.scalars(select(Rejection)).all()
    assert rejection.reason == "invalid_event" and rejection.channel == "pull"
    assert json.loads(rejection.body)["FileUploadEvent"] == "not an object"
    assert emu.event_queue.snapshot()["confirmed"] == 2


def test_an_event_pushed_and_pulled_is_one_event_delivered_twice(app, emu, client):
    body = new_file_upload("5285890784273533167", source_context="both-ways")
    assert client.post("/callbacks/vod", data=body).status_code == 200
    emu.enqueue(json.loads(body))

    _consumer(app, emu).run(until_empty=True)

    with db.session_factory(app)() as session:
        [event] = session.scalars(select(Event)).all()
    assert (event.channel, event.delivery_count, event.source_context) == ("push", 2, "both-ways")


def test_the_stored_body_is_the_event_exactly_as_the_answer_carried_it():
    raw = (b'{"Response": {"EventSet": [ {"EventHandle":"h1","EventType":"FileDeleted",'
           b'"FileDeleteEvent":{"FileIdSet":["1"]},"x":1.50} ,{"EventHandle": "h2", "T": 1e2}],'
           b' "RequestId": "r"}}')
    parsed = json.loads(raw)["Response"]["EventSet"]
    assert event_bodies(raw, parsed) == [
        b'{"EventHandle":"h1","EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["1"]},"x":1.50}',
        b'{"EventHandle": "h2", "T": 1e2}']
    # An answer laid out unlike VOD's (EventSet nested elsewhere first) is re-encoded instead.
    odd = b'{"Response": {"X": {"EventSet": [1]}, "EventSet": [{"a": 1}]}}'
    assert event_bodies(odd, [{"a": 1}]) == [b'{"a": 1}']


def test_killed_between_commit_and_confirm_the_batch_comes_again_and_is_stored_once(app, emu, database_url, tmp_path):
    bodies = mixed_events(40)
    for body in bodies:
        emu.enqueue(body)
    # One loop: with two, a second batch could share the commit before the kill.
    process = _pull_process(database_url, emu, tmp_path, args=["--workers", "1"],
                            RECEIVER_PULL_TEST_KILL_AT="after-commit")
    _out, err = process.communicate(timeout=60)

    assert process.returncode == -signal.SIGKILL, err
    killed = _stored(app)
    assert len(killed) == 16 and emu.event_queue.snapshot()["confirmed"] == 0

    emu.event_queue.wait(lambda q: q.in_flight == 0, timeout=10)  # the handles' 1 s ran out
    totals = _consumer(app, emu).run(until_empty=True)

    stored = _stored(app)
    assert set(stored) == {_dedup_key(b) for b in bodies}
    assert {key: count for key, count in stored.items() if count > 1} == {key: 2 for key in killed}
    assert totals.outcomes == {"duplicate": 16, "stored": 24}
    assert emu.event_queue.snapshot() == {"depth": 0, "in_flight": 0, "confirmed": 40,
                                          "deliveries": 56, "redeliveries": 16}


def test_a_database_outage_confirms_only_what_is_stored_or_spooled_and_loses_nothing(app, database_url, emu, tmp_path):
    outage = Outage(database_url)
    served = create_app({"RECEIVER_DATABASE_URL": outage.app_url, "RECEIVER_DB_TIMEOUT_MS": 200,
                         "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"), "RECEIVER_SPOOL_DRAIN_INTERVAL": 0})
    bodies = mixed_events(300)
    for body in bodies:
        emu.enqueue(body)
    consumer = _consumer(served, emu)
    runner = threading.Thread(target=consumer.run, kwargs={"workers": 2})
    runner.start()
    try:
        emu.event_queue.wait(lambda q: len(q.confirmed) >= 48, timeout=60)
        outage.begin()
        try:
            start = len(emu.event_queue.confirmed)
            emu.event_queue.wait(lambda q: len(q.confirmed) >= start + 64, timeout=60)
            confirmed = emu.event_queue.confirmed  # read first: whatever is confirmed must be found
            # Read on the real URL (the outage is on the consumer's path only; WAL lets SQLite
            # readers past the held write lock).
            found = set(_stored(app)) | _spooled_keys(served)
            assert {_dedup_key(emu.state.events[i]) for i in confirmed} <= found
            assert _spooled_keys(served), "the outage spooled nothing: it did not happen"
        finally:
            outage.end()
        emu.event_queue.wait(lambda q: len(q.confirmed) >= 300, timeout=60)
    finally:
        consumer.stop.set()
        runner.join(30)
    spool.drain(served)

    stored = _stored(app)
    assert set(stored) == {_dedup_key(b) for b in bodies}
    assert sum(stored.values()) == emu.event_queue.deliveries
    assert spool.depth(served.config["RECEIVER_SPOOL_DIR"]) == 0
    db.dispose(served)


def test_two_consumers_at_once_store_each_event_once(app, database_url, emu, tmp_path):
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("several consumers share one database on PostgreSQL")
    processes = [_pull_process(database_url, emu, tmp_path, name=f"c{n}") for n in (1, 2)]
    # Both waiting in PullEvents before anything is queued, so both get a share.
    wait_until(lambda: emu.state.requests["PullEvents"] >= 2, 60, "both consumers to pull")
    bodies = mixed_events(400)
    for body in bodies + bodies[:200]:  # VOD's at-least-once: some events queued twice
        emu.enqueue(body)
    try:
        emu.event_queue.wait(lambda q: len(q.confirmed) >= 600 and q.in_flight == 0 and q.depth == 0,
                             timeout=120)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=30) for process in processes]

    assert [p.returncode for p in processes] == [0, 0], outputs
    assert not [err for _out, err in outputs if "Traceback" in err]
    for _out, err in outputs:  # each consumer stored some batches, and logged each as JSON
        batches = [json.loads(line) for line in err.splitlines() if '"pull batch"' in line]
        assert batches and all(b["events"] > 0 for b in batches)
    stored = _stored(app)
    assert set(stored) == {_dedup_key(b) for b in bodies}
    assert sum(stored.values()) == emu.event_queue.deliveries


def test_sigterm_finishes_the_batch_and_exits_0_without_a_traceback(app, database_url, emu, tmp_path):
    for body in mixed_events(32):
        emu.enqueue(body)
    process = _pull_process(database_url, emu, tmp_path)
    emu.event_queue.wait(lambda q: len(q.confirmed) == 32, timeout=60)
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in err
    assert "stopped: 32 events" in err
    assert len(_stored(app)) == 32


def test_the_consumer_counts_batches_events_confirmations_and_time_since_the_last_pull(app, emu):
    for body in mixed_events(20):
        emu.enqueue(body)
    consumer = _consumer(app, emu)
    consumer.run(until_empty=True)
    text = generate_latest(consumer.metrics.registry).decode()
    assert "vod_pull_batches_total 2.0" in text
    assert 'vod_pull_events_total{outcome="stored"} 20.0' in text
    assert "vod_pull_confirmed_total 20.0" in text
    assert "vod_pull_empty_total 1.0" in text
    [since] = [line for line in text.splitlines() if line.startswith("vod_pull_seconds_since_success ")]
    assert 0 <= float(since.split()[1]) < 60
    assert 'vod_events_total{event_type="NewFileUpload",format="v3"}' in text


def test_an_expired_handle_is_logged_and_left_to_vods_redelivery(app, emu, caplog):
    for body in mixed_events(3):
        emu.enqueue(body)
    consumer = _consumer(app, emu)
    real_confirm = consumer._confirm

    def late_confirm(handles, batch):
        emu.event_queue.wait(lambda q: q.in_flight == 0, timeout=10)  # let the handles run out
        real_confirm(handles, batch)

    consumer._confirm = late_confirm
    batch = consumer.step()
    assert (batch.events, batch.confirmed, batch.expired) == (3, 0, 3)
    assert "VOD will deliver them again" in caplog.text
    consumer._confirm = real_confirm
    assert consumer.run(until_empty=True).outcomes == {"duplicate": 3}
    assert set(_stored(app).values()) == {2}


def test_a_wrong_sub_app_id_or_key_fails_at_start_in_one_line(app, tmp_path):
    with Emulator(secret_id=SECRET_ID, secret_key=SECRET_KEY, storage_dir=tmp_path / "vod",
                  sub_app_id=1500000001) as emulator:
        with pytest.raises(ConsumerError, match=r"SubAppId 1500000002 .*VOD_SUB_APP_ID"):
            Consumer(app, _client(emulator, sub_app_id=1500000002)).check()
        wrong_key = Client(SECRET_ID, "wrong", api_endpoint=emulator.api_endpoint, retry=FAST_RETRY)
        with pytest.raises(ConsumerError, match="TENCENTCLOUD_SECRET_ID/KEY"):
            Consumer(app, wrong_key).check()


def test_pull_command_without_credentials_says_so_in_one_line(database_url, emu, tmp_path):
    env = _env(database_url, emu)
    del env["TENCENTCLOUD_SECRET_KEY"]
    result = subprocess.run([sys.executable, "-m", "receiver.cli", "pull"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: TENCENTCLOUD_SECRET_KEY not set: VOD needs an API key (SecretId and SecretKey, "
        "plus TENCENTCLOUD_SESSION_TOKEN for a temporary key)"]


def test_network_errors_are_retried_with_backoff(app, emu):
    for body in mixed_events(2):
        emu.enqueue(body)
    consumer = _consumer(app, emu)
    sdk = consumer._vod_client()
    real_call, failures = sdk.call, []

    def flaky(action, params, *args, **kwargs):
        if action == "PullEvents" and len(failures) < 2:
            from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

            failures.append(action)
            raise TencentCloudSDKException("RequestLimitExceeded", "slow down")
        return real_call(action, params, *args, **kwargs)

    sdk.call = flaky
    totals = consumer.run(until_empty=True)
    assert totals.confirmed == 2 and len(failures) == 2
    assert 'vod_pull_errors_total{code="RequestLimitExceeded"} 2.0' in generate_latest(
        consumer.metrics.registry).decode()
