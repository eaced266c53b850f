"""The receiver served by gunicorn with several workers, as in production."""
import os
import signal
from select import select as wait_readable
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from factories import new_file_upload
from receiver.auth import REDACTED
from receiver.cli import summary
from receiver.models import Event, Rejection

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:  # a loaded machine, not a limit
        return response.status, response.read()


@pytest.fixture
def serve(app, database_url, tmp_path):
    """Start `vod-receiver serve` on the test database with `env` added; returns its port."""
    processes = []

    def start(**env):
        port = _free_port()
        env = {**os.environ, "RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"),
               "RECEIVER_WORKERS": "3", "RECEIVER_BIND": f"127.0.0.1:{port}", **env}
        log = tmp_path / "serve.log"  # a file, not a pipe nobody reads: a full pipe would stall the workers
        with log.open("wb") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "receiver.cli", "serve", "--no-migrate"],
                                       cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        processes.append(process)
        deadline = time.monotonic() + 30
        while True:
            try:
                # The master listens before its workers have loaded the app: wait for an answer.
                urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=30).close()
                return port
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"gunicorn did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def served(serve):
    """`vod-receiver serve` with three workers on the test database; yields its callback URL."""
    return f"http://127.0.0.1:{serve()}/callbacks/vod"


def test_workers_racing_on_duplicates_store_each_event_once(served, session, tmp_path):
    # Enough at once that each worker writes batches holding several events, in other orders
    # than the other workers' batches: on PostgreSQL those deadlocked unless taken in key order.
    bodies = [new_file_upload(f"w-{n % 10}", source_context=f"ctx-{n % 10}") for n in range(480)]
    with ThreadPoolExecutor(max_workers=48) as pool:
        results = list(pool.map(lambda body: _post(served, body), bodies))
    assert results == [(200, b"{}\n")] * 480
    spooled = list((tmp_path / "spool").glob("*.json"))
    assert spooled == [], f"{len(spooled)} deliveries were spooled instead of stored"
    rows = session.execute(select(Event.file_id, Event.delivery_count).order_by(Event.file_id)).all()
    assert rows == [(f"w-{n}", 48) for n in range(10)]
    assert session.scalar(select(func.count()).select_from(Event)) == 10


WORKERS = {"gevent": "", "gthread": "--worker-class gthread --threads 4"}


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_a_body_trickled_past_the_body_timeout_is_answered_408_and_recorded(serve, session, worker):
    timeout = 1.0
    port = serve(RECEIVER_BODY_TIMEOUT=str(timeout), RECEIVER_WORKERS="1", GUNICORN_CMD_ARGS=WORKERS[worker])
    body = new_file_upload("slow")
    answer, sent = b"", 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /callbacks/vod HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        started = time.monotonic()
        # A byte every 50 ms would take a minute for the whole body; stop once answered.
        while time.monotonic() - started < 20 and sent < len(body):
            if wait_readable([conn], [], [], 0.05)[0]:
                break
            conn.sendall(body[sent:sent + 1])
            sent += 1
        try:
            while chunk := conn.recv(65536):
                if not answer:
                    elapsed = time.monotonic() - started
                answer += chunk
        except ConnectionResetError:  # the rest of our bytes met a closed socket; the answer came first
            pass
        closed = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"body_timeout"' in answer.replace(b" ", b"")
    assert elapsed < timeout + 1.5, (elapsed, closed)
    [rejection] = session.scalars(select(Rejection)).all()
    assert (rejection.reason, rejection.status_code) == ("body_timeout", 408)
    assert 0 < len(rejection.body) <= sent and rejection.body == body[:len(rejection.body)]
    assert rejection.body_truncated and rejection.details["content_length"] == len(body)


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_a_body_sent_at_once_is_not_cut(serve, session, worker):
    port = serve(RECEIVER_BODY_TIMEOUT="0.5", RECEIVER_WORKERS="1", GUNICORN_CMD_ARGS=WORKERS[worker])
    url = f"http://127.0.0.1:{port}/callbacks/vod"
    assert [_post(url, new_file_upload(f"quick-{n}")) for n in range(20)] == [(200, b"{}\n")] * 20
    assert session.scalar(select(func.count()).select_from(Event)) == 20


def test_served_callbacks_are_answered_within_the_database_bound_while_it_is_held(serve, database_url):
    # The shipped gevent worker, where every callback a worker has read is in flight at once.
    # Timed by the server (vod_ingest_seconds, from the request's start): on a busy 2-core
    # machine the time a connection waits to be accepted is the machine's, not the receiver's.
    # tests/test_spool.py times the same bound from the client, in one process.
    from test_spool import Outage

    outage, bound = Outage(database_url), 1.0
    port = serve(RECEIVER_DATABASE_URL=outage.app_url, RECEIVER_DB_TIMEOUT_MS=str(int(bound * 1000)),
                 RECEIVER_SPOOL_DRAIN_INTERVAL="0")
    url = f"http://127.0.0.1:{port}/callbacks/vod"
    with ThreadPoolExecutor(max_workers=40) as pool:
        # Every worker serves some first: their first requests' one-off costs are not measured.
        assert set(pool.map(lambda n: _post(url, new_file_upload(f"warm-{n}")), range(40))) == {(200, b"{}\n")}
        outage.begin()
        try:
            answers = list(pool.map(lambda n: _post(url, new_file_upload(f"held-{n}")), range(40)))
        finally:
            outage.end()
    assert answers == [(200, b"{}\n")] * 40
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    within = _sample(scraped, 'vod_ingest_seconds_bucket{le="2.0"}')
    assert _sample(scraped, "vod_ingest_seconds_count") == within == 80
    assert _sample(scraped, 'vod_callbacks_total{outcome="spooled",reason=""}') == 40


def _sample(scraped, name):
    [value] = [line.rsplit(" ", 1)[1] for line in scraped.splitlines() if line.startswith(name + " ")]
    return float(value)


TOKEN = "callback-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


@pytest.fixture
def started(tmp_path):
    """Start a command in a session of its own (as a terminal's job) and wait until it serves.

    Yields the start function; whatever it started is killed at the end if it still runs.
    """
    processes = []

    def start(args, env, port):
        log = tmp_path / "serve.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                       stderr=stderr, start_new_session=True)
        processes.append(process)
        deadline = time.monotonic() + 120  # a loaded machine boots workers slowly
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=10):
                    return process, log
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_serve_prints_a_summary_and_stops_without_a_traceback(database_url, tmp_path, stop, started):
    port = _free_port()
    env = {**os.environ, "RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"),
           "RECEIVER_WORKERS": "3", "RECEIVER_BIND": f"127.0.0.1:{port}",
           "RECEIVER_CALLBACK_TOKENS": TOKEN, "RECEIVER_ADMIN_TOKENS": ADMIN_TOKEN,
           "RECEIVER_LOG_FORMAT": "json"}
    process, log = started([sys.executable, "-m", "receiver.cli", "serve", "--no-migrate"], env, port)
    status, _ = _post(f"http://127.0.0.1:{port}/callbacks/vod/{TOKEN}", new_file_upload("stop-1"))
    assert status == 200

    if stop == "ctrl-c":  # a terminal sends SIGINT to the whole foreground job
        os.killpg(process.pid, signal.SIGINT)
    else:  # a service manager, or kill
        process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0

    output = log.read_text()
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert output.count("Worker exiting") == 3
    summary = dict(line.split(None, 1) for line in output.splitlines()[:2])
    assert summary["database"] == make_url(database_url).render_as_string(hide_password=True)
    for line in (f"callback path  POST /callbacks/vod/{REDACTED}", "URL token      on (1 token)",
                 "SignKey        off", "allowlist      off",
                 "admin API      on at /admin/api/v1/ (1 token)",
                 "operator page  on at /admin/ (sign in with an admin token)", "workers        3",
                 f"bind           http://127.0.0.1:{port}", "log format     json"):
        assert line in output.splitlines()
    assert TOKEN not in output and ADMIN_TOKEN not in output


def test_the_summary_redacts_every_secret():
    settings = {"RECEIVER_DATABASE_URL": "postgresql+psycopg://vod:hunter2@db.internal/vod",
                "RECEIVER_SPOOL_DIR": "/var/spool/vod", "RECEIVER_SPOOL_DRAIN_INTERVAL": 0,
                "RECEIVER_CALLBACK_TOKENS": (TOKEN, "old-callback-token-0123"),
                "VOD_SIGN_KEYS": ("MySignKey2026",), "RECEIVER_ALLOWED_CIDRS": ("10.0.0.0/8",),
                "RECEIVER_ADMIN_TOKENS": (), "RECEIVER_LOG_FORMAT": "auto"}

    lines = dict(summary(settings, "0.0.0.0:8000", 4, stderr_is_terminal=True))

    assert lines == {
        "database": "postgresql+psycopg://vod:***@db.internal/vod",
        "spool": "/var/spool/vod (automatic drains off)",
        "callback path": f"POST /callbacks/vod/{REDACTED}",
        "URL token": "on (2 tokens)", "SignKey": "on (1 key)", "allowlist": "on (1 network)",
        "admin API": "off", "operator page": "off", "workers": "4", "bind": "http://0.0.0.0:8000",
        "log format": "auto (text: stderr is a terminal)",
    }


@pytest.mark.parametrize("variable, value", [("RECEIVER_WORKERS", "abc"),
                                             ("RECEIVER_BIND", "8000"),
                                             ("RECEIVER_DB_TIMEOUT_MS", "-5"),
                                             ("RECEIVER_DATABASE_URL", "postgres://vod:hunter2@db/vod")])
def test_gunicorn_wsgi_app_stops_on_a_bad_setting_with_one_line(variable, value, tmp_path):
    env = {**os.environ, "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"),
           "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}", variable: value,
           "RECIEVER_WORKERS": "2"}
    result = subprocess.run([sys.executable, "-m", "gunicorn", "wsgi:app"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    warning, error = result.stderr.splitlines()
    assert warning == ("Warning: RECIEVER_WORKERS is not a vod-receiver setting and is ignored; "
                       "did you mean RECEIVER_WORKERS?")
    assert error.startswith(f"Error: {variable}") and "for example" in error
    assert "hunter2" not in result.stderr
