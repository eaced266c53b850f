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
        # The writer rolled back whatever the failed transaction had begun.
        path = spool.write(app.config["RECEIVER_SPOOL_DIR"], delivery,
                           verdict if isinstance(verdict, Refusal) else None)
        log.warning("database write failed (%s); delivery spooled to %s", exc, path.name)
        outcome = "spooled"
    return verdict, outcome
