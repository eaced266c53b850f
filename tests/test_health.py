import pytest
from alembic import command

from receiver import create_app, db

# Nothing listens on port 1: connections are refused at once.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/receiver"


@pytest.mark.parametrize("path", ["/livez", "/healthz"])
def test_liveness_answers_without_the_database(path, tmp_path):
    app = create_app({"RECEIVER_DATABASE_URL": UNREACHABLE, "RECEIVER_SPOOL_DIR": str(tmp_path)})

    response = app.test_client().get(path)

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_ready_when_the_database_is_at_the_head_revision(client, app):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json == {"status": "ready",
                             "revision": ", ".join(sorted(app.extensions["receiver.heads"])),
                             "spool": {"depth": 0, "oldest_age_seconds": None, "quarantined": 0}}


def test_not_ready_when_the_database_is_unreachable(tmp_path):
    app = create_app({"RECEIVER_DATABASE_URL": UNREACHABLE, "RECEIVER_SPOOL_DIR": str(tmp_path)})

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.json["error"]["code"] == "service_unavailable"
    assert response.json["error"]["message"].startswith("The database is unavailable: ")
    assert "postgres@" not in response.json["error"]["message"]


def test_not_ready_when_the_database_was_never_migrated(tmp_path):
    app = create_app({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
                      "RECEIVER_SPOOL_DIR": str(tmp_path / "spool")})

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert "no revision (not migrated)" in response.json["error"]["message"]


def test_not_ready_until_migrations_reach_head(client, database_url):
    db.dispose(client.application)
    command.downgrade(db.alembic_config(database_url), "-1")
    try:
        behind = client.get("/readyz")
    finally:
        db.upgrade(database_url)

    assert behind.status_code == 503
    assert "the code expects" in behind.json["error"]["message"]
    assert "vod-receiver db upgrade" in behind.json["error"]["message"]
    assert client.get("/readyz").status_code == 200
