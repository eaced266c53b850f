"""Group commit: concurrent deliveries share transactions, and each gets its own answer."""
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, StatementError

from receiver import db, events, store
from receiver.models import Event, Rejection
from receiver.writer import GroupWriter

from factories import new_file_upload


class Gate:
    """A write turn that keeps the first batch waiting until `queued` more deliveries are pending."""

    def __init__(self, writer_ref, queued):
        self.writer_ref, self.queued, self.opened = writer_ref, queued, False

    @contextmanager
    def __call__(self, _deadline=None):
        deadline = time.monotonic() + 10
        while not self.opened and len(self.writer_ref()._pending) < self.queued:
            assert time.monotonic() < deadline, "the other deliveries never queued"
            time.sleep(0.001)
        self.opened = True
        yield


def gated_writer(app, queued):
    writer = None
    writer = GroupWriter(db.engine(app), Gate(lambda: writer, queued))
    return writer


def record_concurrently(writer, jobs):
    """Record every (delivery, verdict) from a thread of its own; returns outcomes or errors."""
    results = [None] * len(jobs)

    def run(i, delivery, verdict):
        try:
            results[i] = writer.record(delivery, verdict)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    writer.close()
    return results


def upload_job(file_id):
    delivery = store.Delivery(body=new_file_upload(file_id))
    return delivery, store.judge(delivery)


def count_commits(app):
    commits = []
    event.listen(db.engine(app), "commit", lambda _conn: commits.append(1))
    return commits


def test_deliveries_arriving_during_a_commit_share_the_next(app, session):
    writer = gated_writer(app, queued=7)
    commits = count_commits(app)
    # Eight deliveries at once, two of them the same event.
    jobs = [upload_job(f"f{i}") for i in range(7)] + [upload_job("f0")]

    results = record_concurrently(writer, jobs)

    # The first delivery's own commit, then one for the seven that queued behind it.
    assert len(commits) == 2
    assert sorted(r.kind for r in results) == ["duplicate"] + ["stored"] * 7
    assert len({r.id for r in results}) == 7
    assert session.scalar(select(func.count()).select_from(Event)) == 7
    assert session.scalar(select(func.sum(Event.delivery_count))) == 8


def test_a_value_the_database_refuses_fails_only_its_own_delivery(app, session):
    writer = gated_writer(app, queued=3)
    jobs = [upload_job(f"f{i}") for i in range(4)]
    bad_delivery, bad_verdict = jobs[2]
    bad_verdict.fields["media_created_at"] = datetime(2026, 11, 1)  # naive: no column takes it

    results = record_concurrently(writer, jobs)

    assert isinstance(results[2], StatementError)
    assert [r.kind for i, r in enumerate(results) if i != 2] == ["stored"] * 3
    assert set(session.scalars(select(Event.file_id))) == {"f0", "f1", "f3"}


def test_a_database_that_is_away_fails_every_delivery_of_the_batch(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'missing' / 'r.db'}")  # folder absent: no file
    writer = GroupWriter(engine, nullcontext)

    results = record_concurrently(writer, [upload_job(f"f{i}") for i in range(5)])

    assert all(isinstance(r, OperationalError) for r in results)
    engine.dispose()


def test_each_delivery_at_light_load_is_written_at_once(app):
    commits = count_commits(app)
    for i in range(3):
        assert db.writer(app).record(*upload_job(f"f{i}")).kind == "stored"
    assert len(commits) == 3


def test_rejections_and_events_share_a_batch(app, session):
    writer = gated_writer(app, queued=1)
    refused = store.Delivery(body=b"not json")
    results = record_concurrently(writer, [upload_job("f1"), (refused, store.judge(refused))])

    assert sorted(r.kind for r in results) == ["rejected", "stored"]
    assert session.scalar(select(Rejection.reason)) == "invalid_json"
    assert events.parse(session.scalar(select(Event.body))).fields["file_id"] == "f1"


def test_a_kept_connection_that_died_is_replaced_without_failing_the_delivery(app, session):
    if make_url(db.engine(app).url).get_backend_name() != "postgresql":
        pytest.skip("a SQLite connection cannot be cut from outside")
    writer = db.writer(app)
    assert writer.record(*upload_job("f1")).kind == "stored"
    # As a database restart would: the server ends the writer's idle connection.
    backend = writer._connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    writer._connection.rollback()
    session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})

    assert writer.record(*upload_job("f2")).kind == "stored"
    assert set(session.scalars(select(Event.file_id))) == {"f1", "f2"}


GREENLETS = """
import json, sys
from gevent import monkey
monkey.patch_all()  # as gunicorn's gevent worker does, before the app is loaded
import gevent
from sqlalchemy import event
from receiver import create_app, db, store
from factories import new_file_upload

app = create_app({"RECEIVER_DATABASE_URL": sys.argv[1], "RECEIVER_SPOOL_DIR": sys.argv[2]})
commits = []
event.listen(db.engine(app), "commit", lambda _conn: commits.append(1))

def deliver(i):
    delivery = store.Delivery(body=new_file_upload(f"g{i}"))
    return db.writer(app).record(delivery, store.judge(delivery)).kind

# Eight requests of one worker, each in its own greenlet, as a burst of callbacks would be.
outcomes = [g.value for g in gevent.joinall([gevent.spawn(deliver, i) for i in range(8)], raise_error=True)]
db.dispose(app)
print(json.dumps({"outcomes": outcomes, "commits": len(commits)}))
"""


def test_greenlets_of_a_gevent_worker_share_commits(database_url, session, tmp_path):
    # SQLite's calls block a gevent worker's one thread: without gathering first, each greenlet
    # would lead a batch of its own and every callback would pay its own synced commit.
    done = subprocess.run([sys.executable, "-c", GREENLETS, database_url, str(tmp_path / "spool")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])

    assert result["outcomes"] == ["stored"] * 8
    assert result["commits"] == 1
    assert session.scalar(select(func.count()).select_from(Event)) == 8


class Killed(BaseException):
    """What kills a request mid-way: a GreenletExit, a gevent.Timeout, an interrupt."""


def wait_until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.001)


def run_in_threads(writer, jobs, deadline_seconds=None):
    """Record each job from its own thread, the first alone before the others; results and times."""
    results, seconds = [None] * len(jobs), [None] * len(jobs)

    def run(i, delivery, verdict):
        started = time.monotonic()
        try:
            deadline = started + deadline_seconds if deadline_seconds else None
            results[i] = writer.record(delivery, verdict, deadline)
        except BaseException as exc:  # noqa: B036  (the test looks at what each request got)
            results[i] = exc
        seconds[i] = time.monotonic() - started

    threads = [threading.Thread(target=run, args=(i, *job)) for i, job in enumerate(jobs)]
    threads[0].start()
    wait_until(lambda: writer._led)  # the first request leads
    for thread in threads[1:]:
        thread.start()
    return threads, results, seconds


def join(threads):
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a request was left waiting"


def test_a_request_queued_behind_a_stuck_leader_gives_up_at_its_deadline(app):
    release = threading.Event()

    @contextmanager
    def stuck_turn(_deadline=None):
        release.wait(30)  # a write turn that ignores the deadline, as a hung call would
        yield

    writer = GroupWriter(db.engine(app), stuck_turn, timeout_ms=300)
    threads, results, seconds = run_in_threads(writer, [upload_job("lead"), upload_job("queued")])
    threads[1].join(timeout=10)
    release.set()
    join(threads)
    writer.close()

    assert isinstance(results[1], OperationalError) and "RECEIVER_DB_TIMEOUT_MS" in str(results[1])
    assert 0.25 < seconds[1] < 2  # its own 300 ms, not the leader's 30 s


@pytest.mark.parametrize("where", ["gathering", "before_writing", "after_the_commit"])
def test_a_leader_that_dies_releases_every_waiting_request(app, session, where):
    followers = 3
    writer, first = None, []

    def gather():
        if first:
            return  # a later leader
        first.append(threading.current_thread())
        # Let the followers queue, so they are in the batch the leader takes (or would take).
        wait_until(lambda: len(writer._pending) == 1 + followers)
        if where == "gathering":
            raise Killed()

    @contextmanager
    def turn(_deadline=None):
        if where == "before_writing" and threading.current_thread() is first[0]:
            raise Killed()
        yield
        if where == "after_the_commit" and threading.current_thread() is first[0]:
            raise Killed()

    writer = GroupWriter(db.engine(app), turn)
    writer._gather = gather
    jobs = [upload_job(f"k{i}") for i in range(1 + followers)]
    threads, results, _seconds = run_in_threads(writer, jobs)
    join(threads)

    assert isinstance(results[0], Killed)
    if where == "gathering":  # nothing taken yet: a new leader writes the others
        assert [r.kind for r in results[1:]] == ["stored"] * followers
    else:  # taken into the dead leader's batch: answered with an error, so they are spooled
        assert all(isinstance(r, OperationalError) and "interrupted (Killed)" in str(r)
                   for r in results[1:])
    assert writer._led is False and writer._pending == []
    writer._gather = None
    assert writer.record(*upload_job("after")).kind == "stored"
    writer.close()
