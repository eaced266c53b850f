"""The worker: attempts, retries, dead events, duplicates, leases, timeouts, NOTIFY and signals,
on SQLite and PostgreSQL (the `app` fixture), with real processes where a process must die."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from factories import deliver, new_file_upload, upload, upload_record
from receiver import db
from receiver.handlers import Registry
from receiver.handlers.worker import Worker, backoff, process_event, reset, run_handler
from receiver.handlers.registry import Handler
from receiver.models import HandlerAttempt, HandlerState

HOOKS = Path(__file__).parent
FAST = {"RECEIVER_HANDLER_BACKOFF": 0.001, "RECEIVER_HANDLER_BACKOFF_MAX": 0.01,
        "RECEIVER_HANDLER_TIMEOUT": 5, "RECEIVER_HANDLER_POLL_INTERVAL": 0.05}


@pytest.fixture
def fast_app(make_app):
    """The receiver with retries due at once and short timeouts."""
    return make_app(**FAST)


def state(app, event_id):
    """The handler_states row of an event (None if the worker has not seen it)."""
    with db.engine(app).connect() as conn:
        return conn.execute(select(HandlerState).where(HandlerState.event_id == event_id)).first()


def attempts(app, event_id):
    """(handler, attempt, outcome) of each recorded attempt, in order."""
    with db.engine(app).connect() as conn:
        return [tuple(row) for row in conn.execute(
            select(HandlerAttempt.handler, HandlerAttempt.attempt, HandlerAttempt.outcome)
            .where(HandlerAttempt.event_id == event_id).order_by(HandlerAttempt.id))]


def poll(condition, seconds=20, step=None):
    """Call `condition` (and `step`, if given) until it is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        if step is not None:
            step()
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        if step is None:
            time.sleep(0.01)


def work_until(worker, app, event_id, states=("processed", "dead", "no_handler")):
    """Run the worker's loop step until the event reaches one of `states`."""
    worker._sweep_all()
    return poll(lambda: (row := state(app, event_id)) is not None and row.state in states and row,
                step=worker.run_once)


def test_handler_failing_twice_then_succeeding_shows_three_attempts_and_ends_processed(fast_app):
    registry, calls = Registry(), []

    @registry.on("NewFileUpload")
    def flaky(event):
        calls.append(event.attempt)
        if len(calls) < 3:
            raise ConnectionError("service unavailable")

    event_id = upload(fast_app, 1).id
    row = work_until(Worker(fast_app, registry), fast_app, event_id)
    assert row.state == "processed" and row.attempts == 3
    assert calls == [1, 2, 3]
    name = registry.handlers_for("NewFileUpload")[0].name
    assert attempts(fast_app, event_id) == [(name, 1, "failed"), (name, 2, "failed"),
                                            (name, 3, "succeeded")]


def test_always_failing_handler_ends_dead_then_succeeds_when_forced_after_the_fix(make_app):
    app = make_app(**FAST, RECEIVER_HANDLER_MAX_ATTEMPTS=3)
    registry, broken = Registry(), [True]

    @registry.on("NewFileUpload")
    def handler(event):
        if broken[0]:
            raise ValueError(f"cannot handle {event.file_id}")

    event_id = upload(app, 1).id
    row = work_until(Worker(app, registry), app, event_id)
    assert row.state == "dead" and row.attempts == 3
    assert row.last_error == "ValueError: cannot handle f1"
    with db.engine(app).connect() as conn:
        [trace] = conn.execute(select(HandlerAttempt.traceback).limit(1)).scalars()
    assert "raise ValueError" in trace
    assert process_event(app, event_id, registry) == "dead"  # settled: not run again unasked
    assert len(attempts(app, event_id)) == 3
    broken[0] = False
    assert process_event(app, event_id, registry, force=True, reason="replay") == "processed"
    assert [outcome for *_, outcome in attempts(app, event_id)] == ["failed"] * 3 + ["succeeded"]


def test_duplicate_delivery_of_a_processed_event_does_not_run_it_again(fast_app):
    registry, calls = Registry(), []
    registry.add("NewFileUpload", calls.append)
    event_id = upload(fast_app, 1).id
    worker = Worker(fast_app, registry)
    work_until(worker, fast_app, event_id)
    assert upload(fast_app, 1).kind == "duplicate"
    while worker.run_once():
        pass
    assert [event.id for event in calls] == [event_id]
    assert state(fast_app, event_id).state == "processed"


def test_retry_runs_only_the_handlers_that_have_not_succeeded(fast_app):
    registry, calls = Registry(), []

    @registry.on("NewFileUpload")
    def steady(event):
        calls.append("steady")

    @registry.on("*")
    def flaky(event):
        calls.append("flaky")
        if calls.count("flaky") == 1:
            raise RuntimeError("first time")

    event_id = upload(fast_app, 1).id
    assert work_until(Worker(fast_app, registry), fast_app, event_id).state == "processed"
    assert calls == ["steady", "flaky", "flaky"]


def test_event_of_a_type_without_handler_is_settled_as_no_handler(fast_app):
    registry, calls = Registry(), []
    registry.add("NewFileUpload", calls.append)
    event_id = deliver(fast_app, b'{"EventType": "FileDeleted", "FileDeleteEvent": '
                                 b'{"FileIdSet": ["f1"]}}').id
    row = work_until(Worker(fast_app, registry), fast_app, event_id)
    assert row.state == "no_handler" and calls == []
    assert attempts(fast_app, event_id) == []


def test_handler_receives_the_parsed_event_not_the_request(fast_app):
    registry, calls = Registry(), []
    registry.add("NewFileUpload", calls.append)
    event_id = deliver(fast_app, new_file_upload("5285890784273533167", source_context="order-7",
                                                 procedure_task_id="p-1")).id
    work_until(Worker(fast_app, registry), fast_app, event_id)
    [event] = calls
    assert (event.id, event.event_type, event.format, event.file_id, event.source_context,
            event.procedure_task_id) == (event_id, "NewFileUpload", "v3", "5285890784273533167",
                                         "order-7", "p-1")
    assert event.payload["FileUploadEvent"]["FileId"] == "5285890784273533167"
    assert event.body == new_file_upload("5285890784273533167", source_context="order-7",
                                         procedure_task_id="p-1")
    assert event.media_url.startswith("http") and event.upload is None


@pytest.mark.parametrize("committed", [True, False], ids=["by FileId", "by SourceContext"])
def test_handler_of_an_uploads_callback_receives_its_upload(fast_app, committed):
    # Before CommitUpload's answer the upload has no FileId yet: the callback finds it by the
    # SourceContext it was tagged with.
    upload_record(fast_app, 1, state="committed" if committed else "stored", minutes=0)
    upload_record(fast_app, 2, minutes=0)  # another upload, not this event's
    registry, calls = Registry(), []
    registry.add("NewFileUpload", calls.append)
    event_id = upload(fast_app, 1).id  # f1, order-1, received a minute after the upload started
    work_until(Worker(fast_app, registry), fast_app, event_id)
    [event] = calls
    assert (event.upload.file_name, event.upload.source_context) == ("1.mp4", "order-1")


def test_reset_makes_a_processed_event_pending_with_every_handler_to_run(fast_app):
    registry, calls = Registry(), []
    registry.add("NewFileUpload", calls.append)
    event_id = upload(fast_app, 1).id
    worker = Worker(fast_app, registry)
    work_until(worker, fast_app, event_id)
    assert reset(fast_app, [event_id]) == 1
    assert state(fast_app, event_id).state == "pending"
    work_until(worker, fast_app, event_id)
    assert len(calls) == 2


def test_hanging_handler_is_stopped_at_the_timeout_and_counted_as_failed(make_app):
    app = make_app(**{**FAST, "RECEIVER_HANDLER_TIMEOUT": 0.2, "RECEIVER_HANDLER_MAX_ATTEMPTS": 1})
    registry, stopped = Registry(), threading.Event()

    @registry.on("NewFileUpload")
    def hangs(event):
        if event.file_id != "f1":
            return
        try:
            while True:  # a handler polling for something that never comes
                time.sleep(0.01)
        finally:
            stopped.set()

    event_id = upload(app, 1).id
    worker = Worker(app, registry)
    assert work_until(worker, app, event_id).state == "dead"
    [(_name, _number, outcome)] = attempts(app, event_id)
    assert outcome == "timeout"
    assert stopped.wait(10), "the handler's thread was not stopped"
    # The next event runs on a fresh thread, the overrun one having been retired.
    assert work_until(worker, app, upload(app, 2).id).state == "processed"


def test_run_handler_records_the_exception_and_its_traceback():
    def broken(event):
        raise KeyError("FileId")

    outcome, error, trace = run_handler(Handler("m:broken", broken), None, 5)
    assert (outcome, error) == ("failed", "KeyError: 'FileId'")
    assert "raise KeyError" in trace


@pytest.mark.parametrize("attempt, low, high", [(1, 5, 10), (2, 10, 20), (3, 20, 40), (20, 50, 100)])
def test_backoff_doubles_with_jitter_up_to_the_cap(attempt, low, high):
    assert backoff(attempt, 10, 100, rng=lambda: 0.0) == low
    assert backoff(attempt, 10, 100, rng=lambda: 1.0) == high


def test_two_workers_on_postgresql_never_run_one_event_at_once_and_run_each_once(fast_app):
    if db.engine(fast_app).dialect.name != "postgresql":
        pytest.skip("several workers share a database on PostgreSQL only (SQLite: one at a time)")
    ids = {upload(fast_app, n).id for n in range(300)}
    lock, running, runs, overlaps = threading.Lock(), set(), [], []
    registry = Registry()

    @registry.on("NewFileUpload")
    def handler(event):
        with lock:
            if event.id in running:
                overlaps.append(event.id)
            running.add(event.id)
        time.sleep(0.001)  # long enough for the other worker to try the same event
        with lock:
            running.discard(event.id)
            runs.append(event.id)

    workers = [Worker(fast_app, registry) for _ in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    try:
        poll(lambda: len(runs) >= len(ids))
    finally:
        for w in workers:
            w.stop()
        for thread in threads:
            thread.join(30)
    assert overlaps == []
    assert sorted(runs) == sorted(ids)
    assert all(w.counts["succeeded"] for w in workers), "one worker did everything"


def _work(app, tmp_path, handler, timeout=5):
    """Start `vod-receiver work` in its own process with the hooks module's `handler`."""
    env = {**os.environ, "RECEIVER_DATABASE_URL": app.config["RECEIVER_DATABASE_URL"],
           "RECEIVER_SPOOL_DIR": app.config["RECEIVER_SPOOL_DIR"], "HOOKS_DIR": str(tmp_path),
           "RECEIVER_HANDLERS": f"NewFileUpload=hooks:{handler}", "PYTHONPATH": str(HOOKS),
           "RECEIVER_HANDLER_TIMEOUT": str(timeout), "RECEIVER_HANDLER_BACKOFF": "0.001",
           "RECEIVER_HANDLER_POLL_INTERVAL": "0.05", "RECEIVER_LOG_FORMAT": "text"}
    return subprocess.Popen([sys.executable, "-m", "receiver.cli", "work"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_worker_killed_mid_attempt_leaves_the_event_to_be_retried_not_lost(fast_app, tmp_path):
    event_id = upload(fast_app, 1).id
    process = _work(fast_app, tmp_path, "hang_first_time", timeout=1)
    try:
        poll(lambda: (tmp_path / f"started-{event_id}").exists() or process.poll() is not None)
        assert process.poll() is None, process.communicate()
        assert state(fast_app, event_id).state == "running"
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        from hooks import hang_first_time

        registry = Registry()
        registry.add("NewFileUpload", hang_first_time, name="hooks:hang_first_time")
        os.environ["HOOKS_DIR"] = str(tmp_path)
        row = work_until(Worker(fast_app, registry), fast_app, event_id)
    finally:
        os.environ.pop("HOOKS_DIR", None)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert row.state == "processed"
    assert attempts(fast_app, event_id) == [(None, 1, "abandoned"),
                                            ("hooks:hang_first_time", 2, "succeeded")]


def test_sigterm_lets_the_current_attempt_finish_and_exits_0(fast_app, tmp_path):
    event_id = upload(fast_app, 1).id
    process = _work(fast_app, tmp_path, "wait_for_release")
    try:
        poll(lambda: (tmp_path / f"started-{event_id}").exists() or process.poll() is not None)
        process.send_signal(signal.SIGTERM)
        (tmp_path / "release").write_text("")
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert (tmp_path / f"finished-{event_id}").exists()
    assert state(fast_app, event_id).state == "processed"
    assert attempts(fast_app, event_id) == [("hooks:wait_for_release", 1, "succeeded")]


def test_notify_wakes_a_waiting_worker_on_postgresql(make_app):
    app = make_app(**{**FAST, "RECEIVER_HANDLER_POLL_INTERVAL": 600})  # only NOTIFY can wake it
    if db.engine(app).dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite workers poll")
    registry, seen = Registry(), threading.Event()
    registry.add("NewFileUpload", lambda event: seen.set(), name="seen")
    worker = Worker(app, registry)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        poll(lambda: worker._listener is not None and worker._sweeps)  # listening, swept
        upload(app, 1)
        assert seen.wait(20), "the worker was not woken"
    finally:
        worker.stop()
        thread.join(30)


def test_second_worker_on_sqlite_says_one_runs_at_a_time(app, tmp_path):
    if db.engine(app).dialect.name != "sqlite":
        pytest.skip("the one-worker lock is SQLite's")
    first = _work(app, tmp_path, "record")
    try:
        poll(lambda: Path(app.config["RECEIVER_DATABASE_URL"].removeprefix("sqlite:///")
                          + ".worker-lock").exists() and _locked(app))
        result = app.test_cli_runner().invoke(args=["work", "--once"])
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert result.exit_code == 1
    assert "SQLite runs one worker at a time" in result.output
    assert "Traceback" not in result.output


def _locked(app):
    from receiver.handlers.worker import WorkerBusy, worker_lock

    try:
        worker_lock(app.config["RECEIVER_DATABASE_URL"]).close()
    except WorkerBusy:
        return True
    return False


def test_bad_handler_path_is_one_clear_line_at_start(make_app):
    app = make_app(RECEIVER_HANDLERS="NewFileUpload=nowhere.hooks:uploaded")
    result = app.test_cli_runner().invoke(args=["work", "--once"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: RECEIVER_HANDLERS: cannot import 'nowhere.hooks' for "
                                     "nowhere.hooks:uploaded: ModuleNotFoundError: No module "
                                     "named 'nowhere'")


def test_worker_outlives_its_database_connections_being_killed(fast_app):
    if db.engine(fast_app).dialect.name != "postgresql":
        pytest.skip("killing a server's connections is a PostgreSQL test")
    from sqlalchemy import text

    registry, seen = Registry(), threading.Event()
    registry.add("NewFileUpload", lambda event: seen.set(), name="seen")
    worker = Worker(fast_app, registry)
    with worker._connect().begin():
        pid = worker._connect().execute(text("SELECT pg_backend_pid()")).scalar()
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        poll(lambda: worker._listener is not None and worker._sweeps)
        listener = worker._listener.info.backend_pid
        with db.engine(fast_app).connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE pid IN (:a, :b)"), {"a": pid, "b": listener})
        upload(fast_app, 1)
        assert seen.wait(30), "the worker did not recover"
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_reset_touches_only_the_events_it_is_given(fast_app):
    first, between, last = (upload(fast_app, n).id for n in (1, 2, 3))
    assert reset(fast_app, [first, last]) == 2  # with the default, empty registry
    assert state(fast_app, between) is None  # left for a worker with handlers to find
    assert state(fast_app, first).state == state(fast_app, last).state == "pending"
