"""Models and migrations describe the same schema, and the migrations run both ways."""
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from receiver import db
from receiver.models import Base


def test_models_and_migrations_do_not_drift(database_url):
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_migrations_downgrade_to_nothing_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = db.alembic_config(url)
    db.upgrade(url)
    command.downgrade(config, "base")
    engine = create_engine(url)
    assert inspect(engine).get_table_names() == ["alembic_version"]
    db.upgrade(url)
    assert {"events", "rejections"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    assert current == ScriptDirectory.from_config(config).get_current_head()
