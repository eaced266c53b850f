"""Group commit: the requests of a process share transactions, several callbacks per commit.

Each callback is still answered only after the commit that holds it (synchronous, durable);
what changes is that the deliveries arriving while one commit is under way share the next.
One sync to disk then covers several callbacks, and on SQLite a worker takes the write turn
shared by all processes once per batch instead of once per request: that turn, held across
every commit, was what capped ingest throughput (docs/operations.md).

There is no writer thread: the first request (a thread, or a greenlet under gevent) to arrive
leads, writing what is pending (its own delivery among it) while later ones wait; then it hands
the lead to the first of those that arrived meanwhile, who writes them all in one transaction.
At light load each request writes its own delivery at once, with no hand-over and no waiting
for a batch to fill.

Under gunicorn's gevent worker (the shipped setting) a worker's requests are greenlets of one
thread, and SQLite's calls block that thread: nothing could join a batch while it is written,
so every leader would write alone. There a leader first lets the loop run the requests it
has already read (gevent.idle): they parse their bodies and join, and one commit covers them.
"""
import os
import sys
import threading
import weakref

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from . import store


class GroupWriter:
    """Write deliveries on `engine` in shared transactions, each inside `write_turn()`."""

    def __init__(self, engine, write_turn):
        self.engine, self.write_turn = engine, write_turn
        self._mutex = threading.Lock()
        self._pending = []  # jobs not yet in a batch
        self._led = False  # a thread is writing (and will hand the lead on)
        # Kept between batches, and used by the leader only: checking a connection out of the
        # pool and back cost more than the insert (a rollback round trip on PostgreSQL).
        self._connection, self._pid, self._closer = None, None, None
        self._gather = _gatherer()

    def record(self, delivery, verdict) -> store.Outcome:
        """Store `delivery` as `verdict` says, once committed; raises the SQLAlchemyError if not."""
        job = _Job(delivery, verdict)
        with self._mutex:
            self._pending.append(job)
            job.leads, self._led = not self._led, True
        if not job.leads:
            job.wait()  # until a leader wrote it, or made this thread the leader
        if job.leads:
            self._lead()
        if job.error is not None:
            raise job.error
        return job.outcome

    def record_many(self, items) -> list:
        """Store several (delivery, verdict) pairs, in one transaction when no one else is writing.

        Returns, per pair, its store.Outcome or the SQLAlchemyError that kept it from the database.
        """
        jobs = [_Job(delivery, verdict) for delivery, verdict in items]
        if not jobs:
            return []
        with self._mutex:
            self._pending.extend(jobs)
            jobs[0].leads, self._led = not self._led, True
        # Each job is finished by whichever batch took it, or woken to lead the next one: a
        # batch under way when these arrived may be followed by one holding all of them.
        for job in jobs:
            if not job.leads:
                job.wait()
            if job.leads and job.outcome is None and job.error is None:
                self._lead()
        return [job.error if job.error is not None else job.outcome for job in jobs]

    def _lead(self):
        if self._gather is not None:
            self._gather()  # let the requests already read join this batch
        with self._mutex:
            batch, self._pending = self._pending, []
        batch.sort(key=_lock_order)
        try:
            self._write(batch)
        finally:
            with self._mutex:
                if self._pending:
                    successor = self._pending[0]
                    successor.leads = True
                    successor.wake()
                else:
                    self._led = False

    def _write(self, batch, retry=True):
        try:
            with self.write_turn():
                connection = self._connect()
                try:
                    outcomes = [store.record(connection, job.delivery, job.verdict) for job in batch]
                    connection.commit()
                except BaseException:
                    self.close()  # rolls back; the next batch starts on a fresh connection
                    raise
        except Exception as exc:  # every waiting request gets an answer, whatever went wrong
            if retry and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                # The kept connection had died (a database restart): once more on a new one.
                return self._write(batch, retry=False)
            if len(batch) > 1 and isinstance(exc, SQLAlchemyError) and store.refused_content(exc):
                # The database refused one delivery's values, and that rolled back the rest:
                # write each alone, so only that one fails (and is spooled by its request).
                for job in batch:
                    self._write([job])
                return
            for job in batch:
                job.finish(error=exc)
            return
        for job, outcome in zip(batch, outcomes):
            job.finish(outcome)

    def _connect(self):
        # A forked child must not use its parent's connection: it opens its own.
        if self._connection is None or self._pid != os.getpid():
            if self._closer is not None:
                self._closer.detach()  # a parent's connection is left alone
            self._connection, self._pid = self.engine.connect(), os.getpid()
            # Closed if the app is dropped without db.dispose (not at exit: after a fork, the
            # parent's connection must be left alone, and exiting closes the socket anyway).
            # One finalizer per kept connection, so reconnecting does not pile them up.
            self._closer = weakref.finalize(self, self._connection.close)
            self._closer.atexit = False
        return self._connection

    def close(self):
        """Give the kept connection back to the pool (the next batch opens another)."""
        if self._connection is not None and self._pid == os.getpid():
            self._closer()  # closes it, once
        self._connection = None


def _lock_order(job):
    # Upserts lock their event's row until the commit. Two workers' batches taking the same
    # events in different orders would deadlock on PostgreSQL, and one batch would be spooled;
    # every batch taking them in key order cannot. (Rejections take no lock anyone waits for.)
    return getattr(job.verdict, "dedup_key", "")


def _gatherer():
    # gevent.idle returns once the loop has run every greenlet that was ready. With threads,
    # the others already join while a batch is written (the database calls let them run).
    if "gevent.monkey" in sys.modules and sys.modules["gevent.monkey"].is_module_patched("threading"):
        from gevent import idle

        return idle
    return None


class _Job:
    """One delivery waiting for its commit; its thread sleeps on a lock until woken."""

    __slots__ = ("delivery", "verdict", "outcome", "error", "leads", "_asleep")

    def __init__(self, delivery, verdict):
        self.delivery, self.verdict = delivery, verdict
        self.outcome = self.error = None
        self.leads = False
        self._asleep = threading.Lock()
        self._asleep.acquire()

    def wait(self):
        self._asleep.acquire()

    def wake(self):
        self._asleep.release()

    def finish(self, outcome=None, error=None):
        self.outcome, self.error = outcome, error
        if not self.leads:  # a leader is awake already: it wrote its own delivery
            self.wake()
