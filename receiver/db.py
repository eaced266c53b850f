"""Engine and session factory (one session per request, removed at app-context teardown), and
the callback path's group writer."""
import fcntl
import os
import threading
import time
import weakref
from contextlib import contextmanager, nullcontext

from flask import current_app, g
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .writer import GroupWriter


def make_engine(url, timeout_ms=2000):
    """Create an engine for `url` with the connection settings the receiver relies on.

    Its errors never quote the values of a statement: they are logged, and the values are
    callback bodies and headers.
    """
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": timeout_ms / 1000}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the one writer; FULL keeps every acknowledged
            # commit on disk (we never trade durability for speed); the busy timeout makes
            # a writer wait for the lock instead of failing at once.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    connect_args = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, round(timeout_ms / 1000))
    engine = create_engine(url, connect_args=connect_args, pool_size=5, max_overflow=5,
                           hide_parameters=True)
    if url.get_backend_name() == "postgresql":

        @event.listens_for(engine, "connect")
        def _no_jit(dbapi_connection, _record):
            # Every statement here is a short indexed one, and JIT compiling one the planner
            # overestimates cost 30-450 ms (the overview's upload look-up, bench/web.py). Set
            # per connection, not as a startup option, which PgBouncer refuses by default.
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET jit = off")
            dbapi_connection.commit()

    return engine


def init_app(app):
    """Attach an engine and session factory to `app`."""
    engine = make_engine(app.config["RECEIVER_DATABASE_URL"], app.config["RECEIVER_DB_TIMEOUT_MS"])
    app.extensions["receiver.db"] = sessionmaker(engine, expire_on_commit=False)
    lock = app.extensions["receiver.db.write_lock"] = WriteLock.for_url(
        app.config["RECEIVER_DATABASE_URL"], app.config["RECEIVER_DB_TIMEOUT_MS"])
    app.extensions["receiver.db.writer"] = GroupWriter(engine, lock.held if lock else nullcontext,
                                                       app.config["RECEIVER_DB_TIMEOUT_MS"])
    app.teardown_appcontext(_remove_session)


class WriteLock:
    """Queue the SQLite writers of every thread and process, so each waits no longer than needed.

    SQLite lets one writer in at a time, and a writer that finds it busy sleeps in growing steps
    (1, 2, 5, 10 ... 100 ms) before it looks again: with several threads writing, they spend
    more time asleep than committing. Queued here instead, a writer gets its turn within a
    fraction of a millisecond. The wait is bounded by RECEIVER_DB_TIMEOUT_MS like SQLite's own, or
    by the deadline the caller gives (what is left of its delivery's time).
    """

    POLL_SECONDS = 0.0002

    def __init__(self, path, timeout_ms):
        self.path, self.timeout = path, timeout_ms / 1000
        self._threads = threading.Lock()  # flock does not exclude threads of one process
        self._file, self._pid = None, None

    @classmethod
    def for_url(cls, url, timeout_ms):
        """The lock for a SQLite file database; None for other databases (they queue well)."""
        url = make_url(url)
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return cls(f"{url.database}.write-lock", timeout_ms)

    @contextmanager
    def held(self, deadline=None):
        """Hold the lock for the block; OperationalError (so the caller spools) on timeout."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        left = deadline - time.monotonic()
        if left <= 0 or not self._threads.acquire(timeout=left):
            raise self._timed_out()
        try:
            lock_file = self._open()
            while True:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise self._timed_out() from None
                    time.sleep(self.POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _open(self):
        # One open file per process: a forked child shares its parent's, and with it the lock.
        if self._pid != os.getpid():
            self._file, self._pid = open(self.path, "a"), os.getpid()
            weakref.finalize(self, self._file.close)
        return self._file

    def _timed_out(self):
        return OperationalError("(write turn)", None, TimeoutError(
            f"database is locked: no write turn within {self.timeout * 1000:.0f} ms"))


def dispose(app=None):
    """Close the app's database connections: the group writer's, then the pool's."""
    writer(app).close()
    engine(app).dispose()


def writer(app=None) -> GroupWriter:
    """The app's group writer, which stores callbacks."""
    return (app or current_app).extensions["receiver.db.writer"]


def write_turn(app=None, deadline=None):
    """Wait (until `deadline`, time.monotonic()) for SQLite's write turn, as the group writer
    does, for a write outside it; a no-op context on other databases."""
    app = app or current_app
    lock = app.extensions["receiver.db.write_lock"]
    if lock is None:
        return nullcontext()
    return lock.held(deadline if deadline is not None else time.monotonic() + lock.timeout)


def session_factory(app=None):
    """The app's session factory, for CLI commands and workers outside a request."""
    return (app or current_app).extensions["receiver.db"]


def engine(app=None):
    """The app's engine."""
    return session_factory(app).kw["bind"]


def get_session() -> Session:
    """The session of the current app context, created on first use."""
    if "db_session" not in g:
        g.db_session = session_factory()()
    return g.db_session


def _remove_session(_exc):
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def alembic_config(url):
    """An alembic Config for the migrations shipped with the receiver, aimed at `url`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_folder()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _migrations_folder():
    # Installed, the migrations are the package receiver.migrations; in a checkout they are the
    # top-level migrations/ folder beside receiver/ (package_dir in setup.cfg maps one to the other).
    from pathlib import Path

    try:
        from . import migrations
    except ImportError:
        return Path(__file__).resolve().parents[1] / "migrations"
    return Path(migrations.__file__).parent


def upgrade(url, revision="head"):
    """Run the migrations on `url` up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
