"""The one front door: every channel that brings an event (push, spool drain, pull, replay)
hands its delivery here to be judged, then stored through the group writer or spooled."""
import logging

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from . import spool, store
from .db import writer
from .events import Refusal

log = logging.getLogger(__name__)


def ingest(delivery, refusal=None, app=None, spool_on_failure=True):
    """Store the delivery, or spool it when the database fails.

    Returns (verdict, outcome): the ParsedEvent stored or the Refusal to answer with, and
    what became of the delivery: stored, duplicate, rejected or spooled. With
    `spool_on_failure=False` (the spool drain) the SQLAlchemyError is raised instead.
    """
    app = app or current_app
    verdict = store.judge(delivery, refusal)
    try:
        outcome = writer(app).record(delivery, verdict).kind
    except SQLAlchemyError as exc:
        if not spool_on_failure:
            raise
        outcome = _spool(app, delivery, verdict, exc)
    return verdict, outcome


def ingest_many(deliveries, app=None):
    """Store several deliveries in one transaction (spooling each the database fails to take).

    Returns a (verdict, outcome) pair per delivery, in order, as ingest() does for one.
    """
    app = app or current_app
    verdicts = [store.judge(delivery) for delivery in deliveries]
    results = writer(app).record_many(list(zip(deliveries, verdicts)))
    outcomes = [_spool(app, delivery, verdict, result) if isinstance(result, SQLAlchemyError)
                else result.kind for delivery, verdict, result in zip(deliveries, verdicts, results)]
    return list(zip(verdicts, outcomes))


def _spool(app, delivery, verdict, exc):
    # The writer rolled back whatever the failed transaction had begun.
    path = spool.write(app.config["RECEIVER_SPOOL_DIR"], delivery,
                       verdict if isinstance(verdict, Refusal) else None)
    log.warning("database write failed (%s); delivery spooled to %s", exc, path.name)
    return "spooled"
