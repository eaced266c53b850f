"""Alembic environment: the URL comes from the receiver's config, the metadata from its models."""
from alembic import context
from sqlalchemy import create_engine, pool

from receiver.models import Base

config = context.config
target_metadata = Base.metadata


def _url():
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from receiver import create_app  # plain `alembic` run from the checkout

    return create_app().config["RECEIVER_DATABASE_URL"]


def run_migrations_offline():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # SQLite alters tables by copying them; batch mode does that for us.
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
