"""The migrations build exactly the schema the models describe, and 0004 goes both ways."""
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
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


def test_migration_0004_downgrades_and_upgrades_again(database_url):
    config = db.alembic_config(database_url)
    command.downgrade(config, "0001")
    command.upgrade(config, "head")
    engine = db.make_engine(database_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0004"
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
