"""The migrations build exactly the schema the models describe, and run both ways."""
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from receiver import db
from receiver.models import Base


def test_models_and_migrations_do_not_drift(app):
    with db.engine(app).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_source_context_index_serves_prefix_ranges_on_postgresql(app):
    engine = db.engine(app)
    [index] = [i for i in inspect(engine).get_indexes("events")
               if i["name"] == "ix_events_source_context"]
    assert index["column_names"] == ["source_context"]
    if engine.dialect.name == "postgresql":
        ops = index["dialect_options"]["postgresql_ops"]
        assert ops == {"source_context": "varchar_pattern_ops"}


def test_migrations_downgrade_and_upgrade_again(database_url):
    config = db.alembic_config(database_url)
    command.downgrade(config, "0001")
    command.upgrade(config, "head")
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == \
            ScriptDirectory.from_config(config).get_current_head()
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_migrations_downgrade_to_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    db.upgrade(url)
    command.downgrade(db.alembic_config(url), "base")
    engine = db.make_engine(url)
    assert inspect(engine).get_table_names() == ["alembic_version"]
    engine.dispose()
