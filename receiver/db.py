"""Engine and session factory; one session per request, removed at app-context teardown."""
from flask import current_app, g
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url, timeout_ms=2000):
    """Create an engine for `url` with the connection settings the receiver relies on."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": timeout_ms / 1000})

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
    return create_engine(url, connect_args=connect_args, pool_size=5, max_overflow=5)


def init_app(app):
    """Attach an engine and session factory to `app`."""
    engine = make_engine(app.config["RECEIVER_DATABASE_URL"], app.config["RECEIVER_DB_TIMEOUT_MS"])
    app.extensions["receiver.db"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(_remove_session)


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
    from pathlib import Path

    import migrations
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url, revision="head"):
    """Run the migrations on `url` up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
