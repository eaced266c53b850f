"""The `vod-receiver` command: a Flask CLI group with the receiver's commands."""
import os
import sys

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from . import db, spool


def _create_app():
    from . import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False)
def main():
    """Receive and store Tencent Cloud VOD event notifications."""


@click.group("db")
def db_group():
    """Manage the database schema."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision):
    """Migrate the database to REVISION (default: the newest)."""
    db.upgrade(current_app.config["RECEIVER_DATABASE_URL"], revision)
    click.echo(f"database at {revision}: {_safe_url()}")


@db_group.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision):
    """Migrate the database back to REVISION."""
    from alembic import command

    command.downgrade(db.alembic_config(current_app.config["RECEIVER_DATABASE_URL"]), revision)
    click.echo(f"database at {revision}")


@db_group.command("current")
@with_appcontext
def db_current():
    """Show the database's migration revision."""
    from alembic import command

    command.current(db.alembic_config(current_app.config["RECEIVER_DATABASE_URL"]))


@click.group("spool")
def spool_group():
    """Deliveries kept on disk while the database was unavailable."""


@spool_group.command("drain")
@with_appcontext
def spool_drain():
    """Store every spooled delivery in the database now."""
    spool_dir = current_app.config["RECEIVER_SPOOL_DIR"]
    drained = spool.drain(db.session_factory(), spool_dir)
    left = spool.depth(spool_dir)
    click.echo(f"drained {drained}, {left} left in {spool_dir}")
    if left:
        sys.exit(1)


@spool_group.command("status")
@with_appcontext
def spool_status():
    """Show how many deliveries wait in the spool."""
    spool_dir = current_app.config["RECEIVER_SPOOL_DIR"]
    click.echo(f"{spool.depth(spool_dir)} waiting in {spool_dir}")


@click.command("serve")
@click.option("--bind", "-b", help="Address to listen on (default: RECEIVER_BIND or 127.0.0.1:8000).")
@click.option("--workers", "-w", type=int, help="Worker processes (default: RECEIVER_WORKERS or from CPUs).")
@click.option("--migrate/--no-migrate", default=True, show_default=True,
              help="Upgrade the database before serving.")
@with_appcontext
def serve(bind, workers, migrate):
    """Migrate the database, then serve the receiver with gunicorn."""
    if migrate:
        db.upgrade(current_app.config["RECEIVER_DATABASE_URL"])
    args = [sys.executable, "-m", "gunicorn", "--config", "python:receiver.gunicorn_conf"]
    if bind:
        args += ["--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    os.execv(sys.executable, [*args, "receiver:create_app()"])


def _safe_url():
    from sqlalchemy.engine import make_url

    return make_url(current_app.config["RECEIVER_DATABASE_URL"]).render_as_string(hide_password=True)


def init_app(app):
    """Add the receiver's commands to the app's CLI."""
    for command in (db_group, spool_group, serve):
        app.cli.add_command(command)


if __name__ == "__main__":
    main()
