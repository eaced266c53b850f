import fcntl

import pytest

from sqlalchemy.engine import make_url

from receiver import create_app, db
from receiver.db import WriteLock

from conftest import SAMPLES


def test_only_sqlite_files_get_a_write_lock(tmp_path):
    assert WriteLock.for_url(f"sqlite:///{tmp_path / 'r.db'}", 100).path == f"{tmp_path / 'r.db'}.write-lock"
    assert WriteLock.for_url("sqlite://", 100) is None
    assert WriteLock.for_url("postgresql+psycopg://postgres@127.0.0.1/x", 100) is None


def test_a_writer_kept_waiting_past_the_timeout_spools_the_callback(database_url, tmp_path):
    if make_url(database_url).get_backend_name() != "sqlite":
        pytest.skip("PostgreSQL queues writers itself; there is no write lock to hold")
    app = create_app({"RECEIVER_DATABASE_URL": database_url, "RECEIVER_DB_TIMEOUT_MS": 50,
                      "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"), "RECEIVER_SPOOL_DRAIN_INTERVAL": 0})
    lock = app.extensions["receiver.db.write_lock"]
    # Another open file description holds the lock, as another worker process would.
    with open(lock.path, "a") as other_worker:
        fcntl.flock(other_worker, fcntl.LOCK_EX)
        response = app.test_client().post(
            "/callbacks/vod", data=(SAMPLES / "v3-push-newfileupload.json").read_bytes())
    db.dispose(app)

    assert response.status_code == 200  # answered as always, within the timeout
    assert len(list((tmp_path / "spool").glob("*.json"))) == 1


def test_postgresql_connections_do_not_jit_compile(database_url):
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("JIT is PostgreSQL's")
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW jit").scalar() == "off"
    finally:
        engine.dispose()
