"""Fixtures of the browser tests: the receiver served by gunicorn with the operator page on, VOD
callbacks posted to it over HTTP, `vod-receiver work` running a handler that fails on one event,
and a real headless Chromium driven by Playwright.

The browser is Debian's `chromium` package: Playwright's own browser download cannot be reached
from our machines, so it is pointed at the system binary. Without playwright or without a
Chromium that starts, the tests skip with the reason, except in CI (CI=true), where they fail.
One server and one worker per module and database (the suite's SQLite and PostgreSQL), one
browser for the session; each test gets a fresh browser context (no cookies).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from receiver import samples
from receiver.models import Base, Event, HandlerAttempt, HandlerState, Rejection, Upload, utcnow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "browser-test-admin-token-0123456789"
WAIT = 30  # seconds: a loaded 2-core machine, not a limit under test

# The callbacks posted to the server: uploads by SourceContext (the FileIds are long, so every
# digit must survive), other types from VOD's own samples, one duplicate and one refused body.
UPLOADS = {"order-a": "5285890784273533001", "order-b": "5285890784273533002",
           "order-fails": "5285890784273533003"}
OTHER_SAMPLES = ("v2-newfileupload.json", "v3-push-filedeleted.json")
REFUSED = b'{"EventType": "NewFileUpload", "FileUploadEvent": '
# Our own uploads (as `vod-receiver upload` records them): order-a's callback is posted, the other's
# never comes.
RECORDED_UPLOADS = {"order-a": UPLOADS["order-a"], "order-waiting": "5285890784273533999"}


def _unavailable(reason):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser tests")
    pytest.skip(f"browser tests skipped: {reason}")


def upload_body(file_id, source_context):
    """VOD's v3 NewFileUpload sample with another FileId and SourceContext (bytes)."""
    document = json.loads(samples.read("v3-push-newfileupload.json"))
    task = document["FileUploadEvent"]
    task["FileId"] = task["MediaBasicInfo"]["Vid"] = file_id
    task["MediaBasicInfo"]["SourceInfo"] = {"SourceType": "Upload", "SourceContext": source_context}
    return json.dumps(document, ensure_ascii=False).encode()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _poll(condition, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


@dataclass
class Site:
    """The running receiver: its URL, database, the hooks' folder and what was posted to it."""

    url: str
    engine: Engine
    hooks_dir: Path
    token: str = TOKEN
    refused: bytes = REFUSED
    rejection_id: int = None
    bodies: dict = field(default_factory=dict)  # SourceContext (or sample name) -> exact bytes
    event_ids: dict = field(default_factory=dict)  # the same keys -> event id
    posted: dict = field(default_factory=dict)  # ledger figures: events, duplicates, rejections…

    def scalars(self, statement):
        """The rows of a one-column query on the site's database, as a list."""
        with self.engine.connect() as conn:
            return list(conn.scalars(statement))


def _start(args, env, log, wait_for=None):
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "receiver.cli", *args], cwd=log.parent, env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    if wait_for:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                # gunicorn listens before its workers have loaded the app: wait for an answer.
                urllib.request.urlopen(wait_for, timeout=WAIT).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    pytest.fail(f"{' '.join(args)} did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
    return process


def _stop(process):
    process.terminate()
    try:
        process.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def site(database_url, tmp_path_factory):
    """`vod-receiver serve` (admin page on) and `vod-receiver work` on the test database (SQLite,
    then PostgreSQL) holding the posted callbacks; one upload's handler failed and awaits a replay."""
    folder = tmp_path_factory.mktemp("site")
    hooks_dir = folder / "hooks"
    hooks_dir.mkdir()
    (hooks_dir / "fail").write_text("")
    engine = create_engine(database_url)
    with engine.begin() as conn:  # the session's database: other tests left rows in it
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    port = _free_port()
    # This checkout first: the subprocesses run the code under test.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "RECEIVER_DATABASE_URL": database_url,
           "RECEIVER_SPOOL_DIR": str(folder / "spool"), "RECEIVER_ADMIN_TOKENS": TOKEN,
           "RECEIVER_LOG_FORMAT": "text"}
    site = Site(f"http://127.0.0.1:{port}", engine, hooks_dir)
    server = _start(["serve", "--no-migrate"], {**env, "RECEIVER_WORKERS": "2", "RECEIVER_BIND": f"127.0.0.1:{port}"},
                    folder / "serve.log", wait_for=f"{site.url}/livez")
    worker = None
    try:
        with engine.begin() as conn:
            now = utcnow()
            conn.execute(Upload.__table__.insert(), [
                {"state": "committed", "started_at": now, "updated_at": now, "committed_at": now,
                 "file_path": f"/videos/{context}.mp4", "file_name": f"{context}.mp4",
                 "file_size": 3000000, "source_context": context, "source_context_generated": False,
                 "file_id": file_id, "resumes": 0} for context, file_id in RECORDED_UPLOADS.items()])
        callbacks = f"{site.url}/callbacks/vod"
        for context, file_id in UPLOADS.items():
            site.bodies[context] = upload_body(file_id, context)
        for name in OTHER_SAMPLES:
            site.bodies[name] = samples.read(name)
        answers = [_post(callbacks, body) for body in site.bodies.values()]
        answers.append(_post(callbacks, site.bodies["order-a"]))  # VOD re-sending: a duplicate
        answers.append(_post(callbacks, REFUSED))
        assert answers == [200] * (len(site.bodies) + 1) + [400], answers
        site.posted = {"events": len(site.bodies), "duplicates": 1, "rejections": 1,
                       "deliveries": len(site.bodies) + 2, "rejections-invalid_json": 1}
        with engine.connect() as conn:
            for key, body in site.bodies.items():
                site.event_ids[key] = conn.scalar(select(Event.id).where(Event.body == body))
            site.rejection_id = conn.scalar(select(Rejection.id))
        assert all(site.event_ids.values()), site.event_ids

        # A long backoff: the failed upload stays failed until the test replays it.
        worker = _start(["work"], {**env, "HOOKS_DIR": str(hooks_dir),
                                   "PYTHONPATH": os.pathsep.join([path, str(HERE.parent)]),  # browser.hooks
                                   "RECEIVER_HANDLERS": "NewFileUpload=browser.hooks:upload",
                                   "RECEIVER_HANDLER_BACKOFF": "3600", "RECEIVER_HANDLER_POLL_INTERVAL": "0.1"},
                        folder / "work.log")
        failing = site.event_ids["order-fails"]
        _poll(lambda: site.scalars(select(HandlerAttempt.outcome).where(HandlerAttempt.event_id == failing))
             == ["failed"] or worker.poll() is not None, "the failing upload's first attempt")
        assert worker.poll() is None, (folder / "work.log").read_text()[-2000:]
        _poll(lambda: not site.scalars(select(HandlerState.event_id).where(HandlerState.state == "pending")),
             "the worker settling every event")
        yield site
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
        engine.dispose()


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium (Debian's), launched once for the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    playwright = sync_playwright().start()
    try:
        # No sandbox: CI runs as root, where Chromium refuses to start with it.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
    except Exception as exc:
        playwright.stop()
        _unavailable(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def poll():
    """poll(condition, what): wait until condition() is true; fail saying `what` did not happen."""
    return _poll


@pytest.fixture
def browse(chromium, site):
    """Open a fresh browser context on the site (no cookies); returns its first page."""
    contexts = []

    def open_page(**options):
        context = chromium.new_context(base_url=site.url, **options)
        context.set_default_timeout(WAIT * 1000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def _sign_in(page, token=TOKEN, path="/admin/"):
    page.goto(path)
    page.get_by_label("Admin token").fill(token)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Sign in").click()
    return navigation.value


@pytest.fixture
def sign_in():
    """sign_in(page, token, path): open `path`, sign in on the page it leads to; the form's response."""
    return _sign_in


@pytest.fixture
def page(browse):
    """A page signed in to the operator page, on the overview."""
    page = browse()
    _sign_in(page)
    return page
