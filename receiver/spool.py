"""A durable local spool for deliveries the database could not take, and its drain.

VOD ignores the status code and re-sends only on timeout (vod-spec §4), so a 5xx while the
database is down would lose the event. Instead each such delivery is written to its own file
(write, fsync, rename, fsync the folder: a file is either complete or absent, whichever worker
wrote it) and answered as if stored; the drain moves the files into the database later.

A file the drain cannot read or store (truncated, not JSON, an older version's format) is moved
to QUARANTINE and recorded as a rejection with its bytes: one bad file must not hold back every
delivery sorted after it.
"""
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from . import store
from .events import Refusal

log = logging.getLogger(__name__)
SUFFIX = ".json"
QUARANTINE = "quarantine"  # a folder inside the spool
_NAME_TIME = "%Y%m%dT%H%M%S%f"


def write(spool_dir, delivery, refusal=None):
    """Append one delivery durably to the spool; returns the file written."""
    spool_dir = Path(spool_dir)
    spool_dir.mkdir(parents=True, exist_ok=True)
    # Names sort by arrival time, so the drain keeps the order deliveries came in.
    name = f"{delivery.received_at.strftime(_NAME_TIME)}-{uuid.uuid4().hex}{SUFFIX}"
    record = {"delivery": delivery.to_dict(), "refusal": refusal.to_dict() if refusal else None}
    tmp = spool_dir / f".{name}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, spool_dir / name)
    _fsync_dir(spool_dir)
    return spool_dir / name


def depth(spool_dir):
    """How many deliveries wait in the spool."""
    try:
        return sum(1 for entry in os.scandir(spool_dir) if _spooled(entry.name))
    except FileNotFoundError:
        return 0


def status(spool_dir):
    """The spool at a glance: depth, age in seconds of the oldest delivery (None if empty),
    and how many files were quarantined."""
    names = []
    try:
        names = [entry.name for entry in os.scandir(spool_dir) if _spooled(entry.name)]
    except FileNotFoundError:
        pass
    oldest = None
    if names:
        first = min(names)  # names start with the arrival time
        try:
            arrived = datetime.strptime(first.split("-", 1)[0], _NAME_TIME).replace(tzinfo=timezone.utc)
            oldest = max(0.0, time.time() - arrived.timestamp())
        except ValueError:  # not a name this module wrote: its file's age instead
            oldest = max(0.0, time.time() - os.stat(Path(spool_dir) / first).st_mtime)
    try:
        quarantined = sum(1 for entry in os.scandir(Path(spool_dir) / QUARANTINE)
                          if not entry.name.startswith("."))
    except FileNotFoundError:
        quarantined = 0
    return {"depth": len(names), "oldest_age_seconds": oldest, "quarantined": quarantined}


def drain(app, spool_dir=None):
    """Store every spooled delivery through the front door (ingest); returns how many were drained.

    Stops at the first database error, leaving the rest for the next drain (nothing is spooled
    again). A file that cannot be read or stored is quarantined and recorded as a rejection.
    Only one process drains at a time (a lock file); the others return 0 at once. Through the
    group writer a drain waits for SQLite's write turn as callbacks do, not in SQLite's busy
    handler, which would block a gevent worker's every request while it waits.
    """
    spool_dir = Path(spool_dir or app.config["RECEIVER_SPOOL_DIR"])
    if depth(spool_dir) == 0:
        return 0
    drained, earliest = 0, None
    with _drain_lock(spool_dir) as locked:
        if not locked:
            return 0
        for path in sorted(p for p in spool_dir.glob(f"*{SUFFIX}") if _spooled(p.name)):
            try:
                received_at = _drain_file(app, path)
            except SQLAlchemyError as exc:
                log.warning("spool drain stopped: database unavailable (%s)", getattr(exc, "orig", exc))
                break
            drained += 1
            if received_at is not None and (earliest is None or received_at < earliest):
                earliest = received_at
        if earliest is not None:
            _recount_from(app, earliest)
    if drained:
        _fsync_dir(spool_dir)
        log.info("drained %d spooled deliveries", drained)
    return drained


def _drain_file(app, path):
    # Raises SQLAlchemyError when the database is unavailable; the file then stays.
    from .ingest import ingest  # ingest spools through this module

    try:
        raw = path.read_bytes()
    except OSError as exc:  # unreadable as a file (permissions): it must not stop the drain either
        return _quarantine(app, path, b"", exc)
    try:
        record = json.loads(raw)
        delivery = store.Delivery.from_dict(record["delivery"])
        refusal = Refusal.from_dict(record["refusal"]) if record["refusal"] else None
    except Exception as exc:  # truncated, not JSON, or a format this version does not know
        return _quarantine(app, path, raw, exc)
    try:
        ingest(delivery, refusal, app, spool_on_failure=False)
    except SQLAlchemyError as exc:
        if not store.refused_content(exc):
            raise
        # The database refused this record's content, not the connection: keep it as a
        # rejection an admin can see rather than retrying it forever.
        try:
            ingest(delivery, Refusal("store_failed", "The database refused this delivery: "
                                     f"{str(getattr(exc, 'orig', exc))[:300]}", status=500),
                   app, spool_on_failure=False)
        except SQLAlchemyError as again:
            if not store.refused_content(again):
                raise
            return _quarantine(app, path, raw, again)
    except Exception as exc:  # anything else that stops it being stored must not stop the drain
        return _quarantine(app, path, raw, exc)
    # A crash between the commit and this unlink stores the delivery again on the next drain,
    # where it is counted as a duplicate: counted twice, never lost.
    path.unlink()
    return delivery.received_at


def _recount_from(app, earliest):
    # The overview's hourly counts are kept for closed hours: those the drained deliveries were
    # received in are counted again. Best effort: the deliveries are stored whatever happens here.
    from . import db, overview

    try:
        with db.session_factory(app)() as session, db.write_turn(app):
            overview.invalidate(session, earliest)
            session.commit()
    except SQLAlchemyError as exc:
        log.warning("overview counts not updated after the drain (%s)", getattr(exc, "orig", exc))


def _quarantine(app, path, raw, exc):
    # Recorded first, then moved: with the database down the file stays (and the drain stops),
    # and a crash between the two records it twice rather than never.
    from .ingest import ingest

    reason = f"{type(exc).__name__}: {str(getattr(exc, 'orig', None) or exc)[:300]}"
    delivery = store.Delivery(body=raw, content_type="application/json")
    refusal = Refusal("spool_unreadable", f"The spool file {path.name} could not be read or stored "
                      f"({reason}); it was moved to {QUARANTINE}/.", status=500,
                      details={"file": path.name, "error": reason})
    try:
        ingest(delivery, refusal, app, spool_on_failure=False)
    except SQLAlchemyError as failed:
        if not store.refused_content(failed):
            raise
        log.error("spool file %s could not be recorded either (%s)", path.name, failed)
    folder = path.parent / QUARANTINE
    folder.mkdir(exist_ok=True)
    os.rename(path, folder / path.name)
    _fsync_dir(folder)
    log.error("spool file %s quarantined: %s", path.name, reason)


def start_drainer(app):
    """Drain the spool every RECEIVER_SPOOL_DRAIN_INTERVAL seconds in a daemon thread."""
    interval = app.config["RECEIVER_SPOOL_DRAIN_INTERVAL"]
    if interval <= 0:
        return None
    def run():
        while not stop.wait(interval):
            try:
                drain(app)
            except Exception:  # keep draining on later ticks whatever went wrong
                log.exception("spool drain failed")

    stop = threading.Event()
    thread = threading.Thread(target=run, name="spool-drainer", daemon=True)
    thread.stop = stop
    thread.start()
    return thread


@contextmanager
def _drain_lock(spool_dir):
    with open(spool_dir / ".drain.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _spooled(name):
    return name.endswith(SUFFIX) and not name.startswith(".")


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
