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

Every delivery carries a deadline, RECEIVER_DB_TIMEOUT_MS from when it starts waiting: VOD gives
up after 5 s, so the waits (for a leader, for the write turn, in SQLite's busy handler) must not
add up. A request still queued at its deadline leaves the queue and fails (its caller spools);
a leader writes with the earliest deadline of its batch, so every wait of the batch ends by it.
A request that dies while leading (a killed greenlet, a gevent.Timeout) fails its batch's other
deliveries into the spool and hands the lead on: nobody is left waiting for a leader that is gone.
"""
import os
import sys
import threading
import time
import weakref

from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from . import store


class GroupWriter:
    """Write deliveries on `engine` in shared transactions, each inside `write_turn(deadline)`."""

    def __init__(self, engine, write_turn, timeout_ms=2000):
        # write_turn(deadline) is a context manager that waits for the turn until `deadline`.
        self.engine, self.write_turn = engine, write_turn
        self.timeout = timeout_ms / 1000
        # SQLite's busy timeout is set to RECEIVER_DB_TIMEOUT_MS at connect; a batch with less
        # time left lowers it on the kept connection (and close() puts it back).
        self._sqlite = engine.dialect.name == "sqlite"
        self._full_busy_ms = self._busy_ms = int(timeout_ms)
        self._mutex = threading.Lock()
        self._pending = []  # jobs not yet in a batch
        self._led = False  # a thread is writing (and will hand the lead on)
        # Kept between batches, and used by the leader only: checking a connection out of the
        # pool and back cost more than the insert (a rollback round trip on PostgreSQL).
        self._connection, self._pid, self._closer = None, None, None
        self._gather = _gatherer()
        self._poll_busy = self._sqlite and self._gather is not None  # under gevent (see _write)

    def record(self, delivery, verdict, deadline=None) -> store.Outcome:
        """Store `delivery` as `verdict` says, once committed; raises the SQLAlchemyError if not.

        `deadline` (time.monotonic()) defaults to RECEIVER_DB_TIMEOUT_MS from now; past it the
        delivery is given up with an OperationalError.
        """
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        job = _Job(delivery, verdict, deadline)
        with self._mutex:
            self._pending.append(job)
            job.leads, self._led = not self._led, True
        if not job.leads:
            self._wait(job)  # until a leader wrote it, made this thread the leader, or time ran out
        if job.leads:
            self._lead(job)
        if job.error is not None:
            raise job.error
        return job.outcome

    def record_many(self, items, deadline=None) -> list:
        """Store several (delivery, verdict) pairs, in one transaction when no one else is writing.

        Returns, per pair, its store.Outcome or the SQLAlchemyError that kept it from the
        database (the caller spools it); `deadline` as in record().
        """
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        jobs = [_Job(delivery, verdict, deadline) for delivery, verdict in items]
        if not jobs:
            return []
        with self._mutex:
            self._pending.extend(jobs)
            jobs[0].leads, self._led = not self._led, True
        # Each job is finished by whichever batch took it, or woken to lead the next one: a
        # batch under way when these arrived may be followed by one holding all of them.
        for job in jobs:
            if not job.leads and job.outcome is None and job.error is None:
                self._wait(job)
            if job.leads and job.outcome is None and job.error is None:
                self._lead(job)
        return [job.error if job.error is not None else job.outcome for job in jobs]

    def _wait(self, job):
        try:
            woken = job.wait(job.deadline - time.monotonic())
        except BaseException:
            # Killed while waiting: a lead handed to this request must not die with it.
            self._withdraw(job)
            raise
        if woken:
            return
        if self._withdraw(job):
            job.error = _timed_out(self.timeout)
            return
        # A leader already took it into its batch: that batch's waits end by its earliest
        # deadline, which is no later than this one, and then the leader answers it.
        job.wait()

    def _withdraw(self, job):
        # Whether `job` left the queue; False when it is in a batch being written.
        with self._mutex:
            try:
                self._pending.remove(job)
            except ValueError:
                return False
            if job.leads:  # made the leader meanwhile: the next one leads instead
                job.leads = False
                self._hand_on()
            return True

    def _hand_on(self):
        # Called holding the mutex, by a leader that is done.
        if self._pending:
            successor = self._pending[0]
            successor.leads = True
            successor.wake()
        else:
            self._led = False

    def _lead(self, own):
        batch = ()
        try:
            if self._gather is not None:
                self._gather()  # let the requests already read join this batch
            with self._mutex:
                batch, self._pending = self._pending, []
            deadline = min(job.deadline for job in batch)
            if deadline <= time.monotonic():
                batch = self._expire(batch, own)
                if not batch:
                    return
                deadline = min(job.deadline for job in batch)
            batch.sort(key=_lock_order)
            self._write(batch, deadline)
        except BaseException as exc:
            # This request died leading (killed, a gevent.Timeout, an interrupt): the others of
            # its batch are answered now (their requests spool them), not left waiting forever.
            error = _interrupted(exc)
            for job in batch:
                if job is not own and job.outcome is None and job.error is None:
                    job.finish(error=error)
            with self._mutex:
                if own in self._pending:  # died before taking its batch (in _gather)
                    self._pending.remove(own)
            raise
        finally:
            with self._mutex:
                self._hand_on()

    def _expire(self, batch, own):
        # Deliveries past their deadline are answered at once (and spooled by their requests).
        now = time.monotonic()
        live = [job for job in batch if job.deadline > now]
        for job in batch:
            if job.deadline <= now:
                job.finish(error=_timed_out(self.timeout))
        if live and own.deadline <= now:
            # This leader's own time is up: it answers now, and the next request writes the rest.
            with self._mutex:
                self._pending[:0] = live
            return []
        return live

    def _write(self, batch, deadline, retry=True):
        pause = BUSY_PAUSE
        while True:
            try:
                with self.write_turn(deadline):
                    connection = self._connect()
                    try:
                        if self._sqlite:
                            self._limit_busy_wait(connection, deadline)
                        outcomes = [store.record(connection, job.delivery, job.verdict) for job in batch]
                        connection.commit()
                    except BaseException as exc:
                        if self._poll_busy and _busy(exc):
                            connection.rollback()  # nothing was written: the connection is sound
                        else:
                            self.close()  # rolls back; the next batch starts on a fresh connection
                        raise
            except Exception as exc:  # every waiting request gets an answer, whatever went wrong
                if self._poll_busy and _busy(exc) and time.monotonic() + pause < deadline:
                    # Another process holds SQLite's lock. Under gevent its busy handler would
                    # block the worker's one thread, and every request read meanwhile would
                    # start its own wait after it; so it is off, and the wait is this sleep,
                    # which lets the other greenlets run. The write turn is let go meanwhile.
                    time.sleep(pause)
                    pause = min(pause * 2, MAX_BUSY_PAUSE)
                    continue
                if retry and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                    # The kept connection had died (a database restart): once more on a new one.
                    return self._write(batch, deadline, retry=False)
                if len(batch) > 1 and isinstance(exc, SQLAlchemyError) and store.refused_content(exc):
                    # The database refused one delivery's values, and that rolled back the rest:
                    # write each alone, so only that one fails (and is spooled by its request).
                    for job in batch:
                        self._write([job], deadline)
                    return
                for job in batch:
                    job.finish(error=exc)
                return
            for job, outcome in zip(batch, outcomes):
                job.finish(outcome)
            return

    def _limit_busy_wait(self, connection, deadline):
        # SQLite waits in its busy handler while another process holds the database: that wait
        # may use only what is left of the batch's time (under gevent, none: _write polls).
        # Left alone when within 50 ms of it (the usual case: the turn came at once), so most
        # batches pay no extra statement.
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise _timed_out(self.timeout)
        wanted = 0 if self._poll_busy else min(left_ms, self._full_busy_ms)
        if abs(self._busy_ms - wanted) > 50 or (wanted == 0 and self._busy_ms):
            connection.connection.dbapi_connection.execute(f"PRAGMA busy_timeout={wanted}")
            self._busy_ms = wanted

    def _connect(self):
        # A forked child must not use its parent's connection: it opens its own.
        if self._connection is None or self._pid != os.getpid():
            if self._closer is not None:
                self._closer.detach()  # a parent's connection is left alone
            self._connection, self._pid = self.engine.connect(), os.getpid()
            self._busy_ms = self._full_busy_ms  # as the connect event set it
            # Closed if the app is dropped without db.dispose (not at exit: after a fork, the
            # parent's connection must be left alone, and exiting closes the socket anyway).
            # One finalizer per kept connection, so reconnecting does not pile them up.
            self._closer = weakref.finalize(self, self._connection.close)
            self._closer.atexit = False
        return self._connection

    def close(self):
        """Give the kept connection back to the pool (the next batch opens another)."""
        if self._connection is not None and self._pid == os.getpid():
            if self._busy_ms != self._full_busy_ms:
                try:  # pooled, it serves sessions next: give it back the configured busy timeout
                    self._connection.connection.dbapi_connection.execute(
                        f"PRAGMA busy_timeout={self._full_busy_ms}")
                except Exception:
                    self._connection.invalidate()  # not pooled again
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


# Sleeps between attempts while another process holds SQLite's lock under gevent, growing as
# SQLite's own busy handler's do.
BUSY_PAUSE, MAX_BUSY_PAUSE = 0.001, 0.025
SQLITE_BUSY = 5


def _busy(exc):
    # SQLite's "database is locked": another connection holds the write lock.
    orig = getattr(exc, "orig", None)
    return (isinstance(exc, OperationalError)
            and getattr(orig, "sqlite_errorcode", 0) & 0xFF == SQLITE_BUSY)


def _timed_out(seconds):
    return OperationalError("(waiting for the database)", None, TimeoutError(
        f"database busy: not written within RECEIVER_DB_TIMEOUT_MS ({seconds * 1000:.0f} ms)"))


def _interrupted(exc):
    return OperationalError("(group commit)", None, RuntimeError(
        f"the request writing this batch was interrupted ({type(exc).__name__})"))


class _Job:
    """One delivery waiting for its commit; its thread sleeps on a lock until woken."""

    __slots__ = ("delivery", "verdict", "deadline", "outcome", "error", "leads", "_asleep")

    def __init__(self, delivery, verdict, deadline):
        self.delivery, self.verdict, self.deadline = delivery, verdict, deadline
        self.outcome = self.error = None
        self.leads = False
        self._asleep = threading.Lock()
        self._asleep.acquire()

    def wait(self, timeout=None):
        """Sleep until woken (True) or for `timeout` seconds at most (False)."""
        return self._asleep.acquire(timeout=-1 if timeout is None else max(timeout, 0))

    def wake(self):
        self._asleep.release()

    def finish(self, outcome=None, error=None):
        self.outcome, self.error = outcome, error
        if not self.leads:  # a leader is awake already: it wrote its own delivery
            self.wake()
