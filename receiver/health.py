"""Probes: /livez (the process answers), /readyz (the database is reachable and migrated)."""
from flask import Blueprint, current_app
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import db, spool
from .errors import ApiError

bp = Blueprint("health", __name__)


@bp.get("/livez")
@bp.get("/healthz")
def live():
    """The process is alive; touches no dependency, so a database outage never restarts it."""
    return {"status": "ok"}


@bp.get("/readyz")
def ready():
    """Ready when the database answers and its migrations are at the code's head; else 503.

    Either way the answer shows the spool: depth, the oldest delivery's age, quarantined files.
    """
    heads = current_app.extensions["receiver.heads"]
    state = {"spool": spool.status(current_app.config["RECEIVER_SPOOL_DIR"])}
    try:
        current = _current_revisions()
    except SQLAlchemyError as exc:
        # The exception names the driver's problem; the URL (and any password) stays out.
        reason = getattr(exc, "orig", None) or exc
        raise _not_ready(f"The database is unavailable: {type(reason).__name__}: "
                         f"{str(reason).strip()[:300]}", state) from None
    if current != heads:
        raise _not_ready(
            f"The database schema is at {_names(current)}, the code expects {_names(heads)}: "
            "run `vod-receiver db upgrade`.", state)
    return {"status": "ready", "revision": _names(heads), **state}


def _not_ready(message, details):
    # The code werkzeug's ServiceUnavailable gave before, now with the spool in the details.
    return ApiError("service_unavailable", message, 503, details)


def init_app(app):
    """Register the probes, caching the migrations' head revision(s) once per process."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(db.alembic_config(app.config["RECEIVER_DATABASE_URL"]))
    app.extensions["receiver.heads"] = frozenset(script.get_heads())
    app.register_blueprint(bp)


def _current_revisions():
    try:
        return _read_revisions()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        # A pooled connection from before a database restart fails once and is discarded:
        # ask again on a fresh one before calling the database down.
        return _read_revisions()


def _read_revisions():
    with db.engine().connect() as conn:
        if conn.dialect.name == "postgresql":
            # A probe answers fast or not at all; the connect timeout is already short.
            conn.execute(text("SET LOCAL statement_timeout = 1000"))
        if not inspect(conn).has_table("alembic_version"):
            return frozenset()
        return frozenset(conn.scalars(text("SELECT version_num FROM alembic_version")))


def _names(revisions):
    return ", ".join(sorted(revisions)) or "no revision (not migrated)"
