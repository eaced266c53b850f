"""A durable local spool for deliveries the database could not take, and its drain.

VOD ignores the status code and re-sends only on timeout (vod-spec §4), so a 5xx while the
database is down would lose the event. Instead each such delivery is written to its own file
(write, fsync, rename, fsync the folder: a file is either complete or absent, whichever worker
wrote it) and answered as if stored; the drain moves the files into the database later.
"""
import fcntl
import json
import logging
import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import StatementError

from . import store
from .events import Refusal

log = logging.getLogger(__name__)
SUFFIX = ".json"


def write(spool_dir, delivery, refusal=None):
    """Append one delivery durably to the spool; returns the file written."""
    spool_dir = Path(spool_dir)
    spool_dir.mkdir(parents=True, exist_ok=True)
    # Names sort by arrival time, so the drain keeps the order deliveries came in.
    name = f"{delivery.received_at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex}{SUFFIX}"
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
        return sum(1 for entry in os.scandir(spool_dir) if entry.name.endswith(SUFFIX)
                   and not entry.name.startswith("."))
    except FileNotFoundError:
        return 0


def drain(writer, spool_dir):
    """Store every spooled delivery through `writer` (db.writer); returns how many were drained.

    Stops at the first database error, leaving the rest for the next drain. Only one process
    drains at a time (a lock file); the others return 0 at once. Through the group writer a
    drain waits for SQLite's write turn as callbacks do, not in SQLite's busy handler, which
    would block a gevent worker's every request while it waits.
    """
    spool_dir = Path(spool_dir)
    if depth(spool_dir) == 0:
        return 0
    drained = 0
    with _drain_lock(spool_dir) as locked:
        if not locked:
            return 0
        for path in sorted(p for p in spool_dir.glob(f"*{SUFFIX}")):
            record = json.loads(path.read_text())
            delivery = store.Delivery.from_dict(record["delivery"])
            refusal = Refusal.from_dict(record["refusal"]) if record["refusal"] else None
            try:
                writer.record(delivery, store.judge(delivery, refusal))
            except StatementError as exc:  # a DBAPIError, or a value no column type could bind
                if not store.refused_content(exc):
                    log.warning("spool drain stopped: database unavailable (%s)", exc.orig)
                    break
                # The database refused this record's content, not the connection: keep it
                # as a rejection an admin can see rather than retrying it forever.
                writer.record(delivery, Refusal(
                    "store_failed", f"The database refused this delivery: {str(exc.orig)[:300]}",
                    status=500))
            # A crash between the commit and this unlink stores the delivery again on the
            # next drain, where it is counted as a duplicate: counted twice, never lost.
            path.unlink()
            drained += 1
    if drained:
        _fsync_dir(spool_dir)
        log.info("drained %d spooled deliveries", drained)
    return drained


def start_drainer(app):
    """Drain the spool every RECEIVER_SPOOL_DRAIN_INTERVAL seconds in a daemon thread."""
    interval = app.config["RECEIVER_SPOOL_DRAIN_INTERVAL"]
    if interval <= 0:
        return None
    from .db import writer

    spool_dir = app.config["RECEIVER_SPOOL_DIR"]

    def run():
        while not stop.wait(interval):
            try:
                drain(writer(app), spool_dir)
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


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
