"""Fixtures: every test that uses `app` runs against SQLite and against PostgreSQL.

The schema is built by running the migrations, once per database per session; each test
starts from empty tables. PostgreSQL tests get a database of their own on the server named by
RECEIVER_TEST_DATABASE_URL (created and dropped here, so parallel runs do not collide), and
skip with the reason when it is unset or unreachable.
"""
import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from receiver import config, create_app, db
from receiver.models import Base

from receiver.samples import FOLDER as SAMPLES  # noqa: F401  (shipped inside the package; tests import it from here)


def _postgres_database():
    url = config.value("RECEIVER_TEST_DATABASE_URL")  # checked like every setting
    if not url:
        pytest.skip("PostgreSQL half skipped: RECEIVER_TEST_DATABASE_URL is not set")
    server = make_url(url)
    admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        admin.connect().close()
    except Exception as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL half skipped: cannot reach {server.render_as_string()}: {exc}")
    name = f"vodr_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return admin, name, server.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'receiver.db'}"
        db.upgrade(url)
        yield url
        return
    admin, name, url = _postgres_database()
    try:
        db.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def make_app(database_url, tmp_path):
    """Build the receiver on empty tables with `overrides` to the test settings."""
    apps = []

    def make(**overrides):
        app = create_app({
            "TESTING": True,
            "RECEIVER_DATABASE_URL": database_url,
            "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"),
            "RECEIVER_SPOOL_DRAIN_INTERVAL": 0,
            **overrides,
        })
        with db.engine(app).begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        apps.append(app)
        return app

    yield make
    for app in apps:
        db.dispose(app)


@pytest.fixture
def app(make_app):
    """The receiver on empty tables, with its spool in a temporary folder."""
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def session(app):
    """A session on the app's database, for asserting what was stored."""
    with db.session_factory(app)() as session:
        yield session
