"""The receiver served by gunicorn with several workers, as in production."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from factories import new_file_upload
from receiver.models import Event

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.fixture
def served(app, database_url, tmp_path):
    """`vod-receiver serve` with three workers on the test database; yields its callback URL."""
    port = _free_port()
    env = {**os.environ, "RECEIVER_DATABASE_URL": database_url, "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"),
           "RECEIVER_WORKERS": "3", "RECEIVER_BIND": f"127.0.0.1:{port}"}
    log = tmp_path / "serve.log"  # a file, not a pipe nobody reads: a full pipe would stall the workers
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "receiver.cli", "serve", "--no-migrate"], cwd=tmp_path,
                                   env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"gunicorn did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/callbacks/vod"
    process.terminate()
    process.wait(timeout=30)


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
