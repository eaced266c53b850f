"""Run the application's handlers off the request path: find new events, claim them, run their
handlers with a timeout, record every attempt, retry failures with backoff, settle the rest.

State is kept per event (handler_states, one row), with the handlers that already succeeded
listed in it: the claim is one row whatever the number of handlers, and a retry runs only the
handlers that have not succeeded yet, so no handler runs twice for an event unless replayed.
Attempts are per (event, handler) in handler_attempts.

New events become pending without the callback path doing anything: the worker scans `events`
past the highest id it has seen. On SQLite writers take turns, so ids become visible in order
and that scan misses nothing. On PostgreSQL a transaction can commit a lower id after a higher
one is visible; a periodic sweep looks again at the ids of the last SETTLE_SECONDS for events
without a state row (NOT EXISTS against the primary key), and every worker sweeps everything
once when it starts.

Claiming takes due rows with FOR UPDATE SKIP LOCKED on PostgreSQL, so any number of workers on
any number of hosts share the backlog; on SQLite one worker runs at a time (a lock file beside
the database). A claim is a lease: a worker that dies (SIGKILL, lost host) leaves rows in
`running` until the lease ends, and the next claim records an `abandoned` attempt and counts
the round as failed. Outcomes are written in batches (every FLUSH_SECONDS at most), fenced by
the worker's id, so a worker whose lease was taken over cannot overwrite the new holder's state.

Handlers run in a thread of their own (a Runner, kept between attempts), waited for with the
timeout. A thread cannot be killed: one that overruns is abandoned, recorded as `timeout`, and has HandlerTimeout raised inside it
(CPython's PyThreadState_SetAsyncExc), which stops it the next time it runs Python code — at
once for a Python loop or a sleep, after the call returns for a blocking C call. The other
choice, a child process per attempt, really stops anything, but forks a process per event or
pipes every event to a helper, and the handler then runs in a copy of the application: its
in-memory effects (a test's list, a cache) are lost. docs/operations.md has the measured cost.
"""
import ctypes
import fcntl
import json
import logging
import os
import random
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import (JSON, and_, bindparam, case, exists, func, insert, literal, or_, select as select_, text,
                        update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .. import db as _db
from ..models import Event as EventRow, HandlerAttempt, HandlerState, Upload, utcnow
from .registry import Event, Handler, Registry

log = logging.getLogger(__name__)

CHANNEL = "vod_receiver_events"  # NOTIFYed by the events_notify trigger (migration 0007)
SETTLE_SECONDS = 60  # longer than any transaction of the group writer stays open
SWEEP_SECONDS = 5
FLUSH_SECONDS = 0.1  # the longest a finished attempt waits in memory to be recorded
BATCH_SECONDS = 0.2
# While a backlog keeps the worker busy, it looks for new events this often (and after each wait).
DISCOVER_SECONDS = 0.05  # a claim takes about this much work, so slow handlers spread over workers
OUTCOMES = ("succeeded", "failed", "timeout", "abandoned")
# Settled states, and the backlog as a literal: the partial index ix_handler_states_backlog is
# used only when the planner sees this exact predicate (a bound parameter would hide it).
SETTLED = ("processed", "dead", "no_handler")
BACKLOG = text("handler_states.state IN ('pending', 'failed', 'running')")
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
# PostgreSQL: a batch's attempts in one statement of fixed text (psycopg caches and prepares it;
# a multi-row VALUES differs with every batch size and is parsed anew each time).
_ATTEMPT_COLUMNS = {"event_id": "bigint", "handler": "varchar", "attempt": "integer",
                    "started_at": "timestamptz", "finished_at": "timestamptz",
                    "outcome": "varchar", "error": "text", "traceback": "text",
                    "worker": "varchar", "reason": "varchar"}
_RECORD_MANY = text(
    f"INSERT INTO handler_attempts ({', '.join(_ATTEMPT_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _ATTEMPT_COLUMNS.items()) + ")")
# PostgreSQL: a batch's outcomes in one statement (arrays unnested), not one UPDATE per event;
# fenced like the per-row UPDATE SQLite runs: only rows this worker still holds.
_SETTLE_MANY = text("""
    UPDATE handler_states AS s
    SET state = v.state, attempts = v.attempts, done = CAST(v.done AS json), due_at = v.due_at,
        last_error = v.last_error, worker = NULL, updated_at = :now
    FROM unnest(CAST(:ids AS bigint[]), CAST(:states AS varchar[]), CAST(:attempts AS integer[]),
                CAST(:dones AS text[]), CAST(:dues AS timestamptz[]), CAST(:errors AS text[]))
         AS v(event_id, state, attempts, done, due_at, last_error)
    WHERE s.event_id = v.event_id AND s.worker = :worker AND s.state = 'running'
""")


class HandlerTimeout(BaseException):
    """Raised inside a handler that overran RECEIVER_HANDLER_TIMEOUT (a BaseException, so that a
    handler's `except Exception` does not swallow it)."""


class WorkerBusy(RuntimeError):
    """Another worker holds this SQLite database's worker lock."""


@dataclass(frozen=True)
class Settings:
    """How handlers are run and retried (the RECEIVER_HANDLER_* settings)."""

    max_attempts: int = 5
    timeout: float = 60.0
    backoff: float = 10.0
    backoff_max: float = 3600.0
    poll_interval: float = 1.0
    batch_max: int = 100

    @classmethod
    def from_config(cls, config):
        """The settings of an app's config, defaults for those it does not set."""
        names = {"max_attempts": "RECEIVER_HANDLER_MAX_ATTEMPTS", "timeout": "RECEIVER_HANDLER_TIMEOUT",
                 "backoff": "RECEIVER_HANDLER_BACKOFF", "backoff_max": "RECEIVER_HANDLER_BACKOFF_MAX",
                 "poll_interval": "RECEIVER_HANDLER_POLL_INTERVAL"}
        return cls(**{attr: config[key] for attr, key in names.items() if config.get(key) is not None})

    @property
    def lease(self) -> float:
        """How long a claim holds an event: an attempt ends within the timeout, plus slack."""
        return 2 * self.timeout + 1


def backoff(attempt: int, base: float, cap: float, rng=random.random) -> float:
    """Seconds to wait before round `attempt` + 1: exponential, capped, with "equal jitter".

    Half the doubled delay is fixed and half random (AWS Architecture Blog, "Exponential Backoff
    and Jitter"): retries of events that failed together spread out, yet never come back at once
    as full jitter's zero allows. Written out rather than taken from tenacity: tenacity wraps
    calls in a retry loop, and here the wait is a due time stored in the database.
    """
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay / 2 + rng() * delay / 2


@dataclass
class _Claim:
    event_id: int
    attempts: int
    done: list
    state: str = "running"
    row: object = None  # the events row, loaded after the claim


@dataclass
class _Held:
    event_id: int
    attempts: int
    worker: str | None
    claimed_at: object


@dataclass
class _Result:
    claim: _Claim
    state: str
    attempts: int
    done: list
    due_in: float = 0.0
    last_error: str | None = None
    records: list = field(default_factory=list)


class Worker:
    """Claims events, runs their handlers and records the attempts, for one app and registry."""

    def __init__(self, app, registry: Registry | None = None, settings: Settings | None = None,
                 name: str | None = None):
        from .. import handlers  # the package: its `registry` is the default Registry

        self.app, self.registry = app, registry if registry is not None else handlers.registry
        self.settings = settings or Settings.from_config(app.config)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.engine = _db.engine(app)
        self.dialect = self.engine.dialect.name
        lock = app.extensions.get("receiver.db.write_lock")
        self._turn = lock.held if lock is not None else nullcontext  # SQLite's shared write turn
        self._connection = None
        self._seen = 0  # the highest event id scanned
        self._sweeps = deque()  # (monotonic time, _seen then): where the next sweep starts
        self._next_sweep = 0.0
        self._batch = 10
        self._discovered_at = 0.0  # monotonic time of the last look for new events
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._listener, self._want_listen, self._listen_retry = None, False, 0.0
        self._runner = None
        self.counts = dict.fromkeys(OUTCOMES, 0)  # attempts by outcome, for metrics and tests

    # -- the loop ---------------------------------------------------------------------------

    def run(self, once: bool = False, listen: bool = True):
        """Work until stopped (SIGTERM, SIGINT, stop()); with once=True, until nothing is due."""
        restore = self._trap_signals()
        self._want_listen = listen
        try:
            if listen:
                self._listen()
            swept = False
            while not self._stopping.is_set():
                try:
                    if not swept:
                        self._sweep_all()
                        swept = True
                    if self.run_once():
                        continue
                    if once:
                        break
                    wait = self._next_due()
                except SQLAlchemyError as exc:
                    # The database restarted, a deadlock was broken, the network blinked: keep
                    # working once it answers. Events claimed and not recorded come back when
                    # their lease ends (an abandoned attempt).
                    log.warning("database error, retrying in %g s: %s", self.settings.poll_interval,
                                _first_line(exc))
                    self._drop_connection()
                    if once:
                        raise
                    wait = self.settings.poll_interval
                self._wait(wait)
        finally:
            for signum, previous in restore:
                signal.signal(signum, previous)
            self.close()

    def stop(self):
        """Finish the current attempt, record it, hand back the rest and return from run()."""
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):  # the pipe is full (already woken) or closed
            pass

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stopping.is_set()

    def run_once(self) -> int:
        """Discover new events, claim a batch of due ones and run it; the number of events run."""
        now = utcnow()
        connection = self._connect()
        with self._turn():
            with connection.begin():
                if time.monotonic() - self._discovered_at >= DISCOVER_SECONDS:
                    self._discover(connection, now)
                claims, abandoned = self._claim(connection, now, self._batch)
        if not claims:
            return len(abandoned)
        started = time.monotonic()
        self._run_batch(connection, claims)
        rate = len(claims) / max(time.monotonic() - started, 1e-6)
        self._batch = max(1, min(self.settings.batch_max, int(rate * BATCH_SECONDS)))
        return len(claims)

    def process_event(self, event_id: int, *, reason: str | None = None, force: bool = False) -> str:
        """Run one event's handlers now, in this thread; returns its state afterwards."""
        now = utcnow()
        connection = self._connect()
        with self._turn():
            with connection.begin():
                self._discover(connection, now, only=event_id)
                row = connection.execute(
                    select_(HandlerState.state, HandlerState.due_at, HandlerState.attempts,
                            HandlerState.done, HandlerState.worker, HandlerState.claimed_at)
                    .where(HandlerState.event_id == event_id).with_for_update()).first()
                if row is None:
                    raise LookupError(f"no event with id {event_id}")
                if row.state == "running" and row.due_at > now:
                    return "running"  # another worker holds it: it is being run now
                if row.state in SETTLED and not force:
                    return row.state
                attempts = row.attempts
                if row.state == "running":  # its worker died: record that, then run it as asked
                    self._record_abandoned(connection, event_id, row, now)
                    attempts += 1
                self._hold(connection, [event_id], now)
                claim = _Claim(event_id, attempts, [] if force else list(row.done or ()))
                self._load(connection, [claim])
        [result] = self._run_batch(connection, [claim], reason=reason)
        return result.state

    def close(self):
        """Close the worker's connections and let its runner thread end."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:  # already broken: nothing to close cleanly
                pass
            self._listener = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    # -- finding new events -----------------------------------------------------------------

    def _discover(self, connection, now, only=None):
        if only is not None:
            return self._track(connection, now, only - 1, only)
        self._discovered_at = time.monotonic()
        if self.dialect == "postgresql":
            # One round trip, one snapshot: the highest id, and the state rows up to it.
            top = select_(func.coalesce(func.max(EventRow.id), 0).label("id")).cte("top")
            tracking = self._track_statement(now, self._seen, top.c.id).cte("tracking")
            top = connection.execute(select_(top.c.id).add_cte(tracking)).scalar()
        else:  # writers take turns (and this worker holds the write turn): nothing can slip in
            top = connection.execute(select_(func.max(EventRow.id))).scalar() or 0
            if top > self._seen:
                self._track(connection, now, self._seen, top)
        if top > self._seen:
            self._sweeps.append((time.monotonic(), self._seen))
            self._seen = top
        if time.monotonic() >= self._next_sweep:
            # Ids at or below what was seen SETTLE_SECONDS ago are settled: committed or never.
            while len(self._sweeps) > 1 and self._sweeps[1][0] < time.monotonic() - SETTLE_SECONDS:
                self._sweeps.popleft()
            if self._sweeps:
                self._track(connection, now, self._sweeps[0][1], self._seen)
            self._next_sweep = time.monotonic() + SWEEP_SECONDS

    def _sweep_all(self):
        # Once at start: every event without a state row, whenever it was stored.
        connection = self._connect()
        with self._turn():
            with connection.begin():
                # The highest id first: an event committed meanwhile is above it, and the next
                # scan finds it (read the other way round, it could fall between the two).
                self._seen = connection.execute(select_(func.max(EventRow.id))).scalar() or 0
                self._track(connection, utcnow(), 0, self._seen)
        self._sweeps.append((time.monotonic(), self._seen))
        self._next_sweep = time.monotonic() + SWEEP_SECONDS

    def _track(self, connection, now, after, up_to, ids=None):
        connection.execute(self._track_statement(now, after, up_to, ids))

    def _track_statement(self, now, after, up_to, ids=None):
        # One INSERT … SELECT: pending if a handler runs for the type, else settled no_handler.
        # In id order: two workers inserting the same rows in different orders could deadlock.
        types = sorted(self.registry.event_types() - {"*"})
        if "*" in self.registry.event_types():
            state = literal("pending")
        elif types:
            state = case((EventRow.event_type.in_(types), literal("pending")), else_=literal("no_handler"))
        else:
            state = literal("no_handler")
        conditions = [EventRow.id > after,
                      ~exists().where(HandlerState.event_id == EventRow.id)]
        if up_to is not None:
            conditions.append(EventRow.id <= up_to)
        if ids is not None:
            conditions.append(EventRow.id.in_(ids))
        rows = select_(EventRow.id, state, literal(now, HandlerState.due_at.type), literal(0),
                       literal([], JSON()), literal(now, HandlerState.updated_at.type)
                       ).where(and_(*conditions)).order_by(EventRow.id)
        statement = _INSERTS[self.dialect](HandlerState).from_select(
            ["event_id", "state", "due_at", "attempts", "done", "updated_at"], rows)
        return statement.on_conflict_do_nothing()

    # -- claiming ---------------------------------------------------------------------------

    def _claim(self, connection, now, limit):
        if self.dialect == "postgresql":
            return self._claim_returning(connection, now, limit)
        rows = connection.execute(
            select_(HandlerState.event_id, HandlerState.state, HandlerState.attempts,
                    HandlerState.done, HandlerState.worker, HandlerState.claimed_at)
            .where(BACKLOG, HandlerState.due_at <= now)
            .order_by(HandlerState.due_at, HandlerState.event_id).limit(limit)
            .with_for_update(skip_locked=True)).all()
        claims, abandoned = [], []
        for row in rows:
            if row.state == "running":  # the lease ran out: its worker stopped answering
                abandoned.append(row)
            else:
                claims.append(_Claim(row.event_id, row.attempts, list(row.done or ())))
        self._settle_abandoned(connection, abandoned, now)
        if claims:
            self._hold(connection, [claim.event_id for claim in claims], now)
        self._load(connection, claims)
        return claims, abandoned

    def _claim_returning(self, connection, now, limit):
        # PostgreSQL: pick, hold and load in one statement (one round trip instead of three,
        # which is most of the time from a NOTIFY to the handler starting). The picked rows'
        # earlier state comes from the CTE, the event's columns from the join.
        picked = (select_(HandlerState.event_id, HandlerState.state.label("old_state"),
                          HandlerState.worker.label("old_worker"),
                          HandlerState.claimed_at.label("old_claimed_at"))
                  .where(BACKLOG, HandlerState.due_at <= now)
                  .order_by(HandlerState.due_at, HandlerState.event_id).limit(limit)
                  .with_for_update(skip_locked=True).cte("picked"))
        events = EventRow.__table__
        self._lease_until = time.monotonic() + self.settings.lease
        rows = connection.execute(
            update(HandlerState)
            .where(HandlerState.event_id == picked.c.event_id, events.c.id == picked.c.event_id)
            .values(state="running", worker=self.name, claimed_at=now,
                    due_at=now + timedelta(seconds=self.settings.lease), updated_at=now)
            .returning(picked.c.old_state, picked.c.old_worker, picked.c.old_claimed_at,
                       HandlerState.attempts, HandlerState.done,
                       *(events.c[name] for name in _EVENT_FIELDS))).all()
        claims, abandoned = [], []
        for row in sorted(rows, key=lambda row: row.id):
            if row.old_state == "running":  # the lease ran out: its worker stopped answering
                abandoned.append(_Held(row.id, row.attempts, row.old_worker, row.old_claimed_at))
            else:
                claims.append(_Claim(row.id, row.attempts, list(row.done or ()), row=row))
        self._settle_abandoned(connection, abandoned, now)
        return claims, abandoned

    def _settle_abandoned(self, connection, abandoned, now):
        for row in abandoned:
            self._record_abandoned(connection, row.event_id, row, now)
            attempts = row.attempts + 1
            state, due_in = self._after_failure(attempts)
            connection.execute(
                update(HandlerState).where(HandlerState.event_id == row.event_id).values(
                    state=state, attempts=attempts, due_at=now + timedelta(seconds=due_in),
                    worker=None, last_error=_abandoned_error(row), updated_at=now))

    def _hold(self, connection, event_ids, now):
        self._lease_until = time.monotonic() + self.settings.lease
        connection.execute(
            update(HandlerState).where(HandlerState.event_id.in_(event_ids)).values(
                state="running", worker=self.name, claimed_at=now,
                due_at=now + timedelta(seconds=self.settings.lease), updated_at=now))

    def _record_abandoned(self, connection, event_id, row, now):
        self.counts["abandoned"] += 1
        connection.execute(insert(HandlerAttempt).values(
            event_id=event_id, handler=None, attempt=row.attempts + 1,
            started_at=row.claimed_at or now, finished_at=now, outcome="abandoned",
            error=_abandoned_error(row), worker=self.name))

    def _after_failure(self, attempts):
        if attempts >= self.settings.max_attempts:
            return "dead", 0.0
        return "failed", backoff(attempts, self.settings.backoff, self.settings.backoff_max)

    def _load(self, connection, claims):
        if not claims:
            return
        by_id = {claim.event_id: claim for claim in claims}
        columns = [EventRow.__table__.c[name] for name in _EVENT_FIELDS]
        for row in connection.execute(select_(*columns).where(EventRow.id.in_(by_id))):
            by_id[row.id].row = row

    # -- running ----------------------------------------------------------------------------

    def _run_batch(self, connection, claims, reason=None):
        results, unsaved = [], []
        last_flush = time.monotonic()
        for claim in claims:
            if self.stopping:
                break  # the rest go back to the backlog below
            result = self._round(claim, reason)
            results.append(result)
            unsaved.append(result)
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                self._flush(connection, unsaved, [c.event_id for c in claims[len(results):]])
                unsaved, last_flush = [], time.monotonic()
        # Events claimed but not run (stopping): back to the backlog, due now.
        returned = [_Result(c, "pending", c.attempts, c.done) for c in claims[len(results):]]
        self._flush(connection, unsaved + returned, [])
        return results

    def _upload_of(self, row):
        if row.event_type != "NewFileUpload":
            return None  # only an upload's own callback completes it: no query for the rest
        with _db.session_factory(self.app)() as session:
            return linked_upload(session, row)

    def _round(self, claim, reason):
        row = claim.row
        handlers = self.registry.handlers_for(row.event_type) if row is not None else []
        if not handlers:
            return _Result(claim, "no_handler", claim.attempts, claim.done)
        number = claim.attempts + 1
        event = to_event(row, number, self._upload_of(row))
        done, failed, records = list(claim.done), None, []
        for handler in handlers:
            if handler.name in done:
                continue  # it succeeded in an earlier round
            if self.stopping and records:
                break  # SIGTERM: the attempt under way finished, the rest wait for the next worker
            record = self._attempt(handler, event, number, reason)
            records.append(record)
            if record["outcome"] == "succeeded":
                done.append(handler.name)
            else:
                failed = record
        if failed is not None:
            state, due_in = self._after_failure(number)
            return _Result(claim, state, number, done, due_in, _one_line(failed["error"]), records)
        if all(h.name in done for h in handlers):
            return _Result(claim, "processed", number, done, records=records)
        return _Result(claim, "pending", claim.attempts, done, records=records)  # stopped midway

    def _attempt(self, handler, event, number, reason):
        started = utcnow()
        if self._runner is None or self._runner.retired:
            self._runner = Runner()
        outcome, error, trace = self._runner.call(handler, event, self.settings.timeout)
        finished = utcnow()
        self.counts[outcome] += 1
        if outcome != "succeeded":
            log.warning("handler %s %s on event %s (attempt %s): %s", handler.name,
                        "timed out" if outcome == "timeout" else "failed", event.id, number, error,
                        extra={"fields": {"event_id": event.id, "handler": handler.name,
                                          "attempt": number, "outcome": outcome}})
        return {"event_id": event.id, "handler": handler.name, "attempt": number,
                "started_at": started, "finished_at": finished, "outcome": outcome,
                "error": error, "traceback": trace, "worker": self.name, "reason": reason}

    def _flush(self, connection, results, still_held):
        if not results and not still_held:
            return
        now = utcnow()
        records = [record for result in results for record in result.records]
        with self._turn():
            with connection.begin():
                if records and self.dialect == "postgresql":
                    connection.execute(_RECORD_MANY, {
                        name: [record[name] for record in records] for name in _ATTEMPT_COLUMNS})
                elif records:
                    connection.execute(insert(HandlerAttempt), records)
                if results and self.dialect == "postgresql":
                    connection.execute(_SETTLE_MANY, {
                        "ids": [r.claim.event_id for r in results],
                        "states": [r.state for r in results],
                        "attempts": [r.attempts for r in results],
                        "dones": [json.dumps(r.done) for r in results],
                        "dues": [now + timedelta(seconds=r.due_in) for r in results],
                        "errors": [r.last_error for r in results],
                        "worker": self.name, "now": now})
                elif results:
                    connection.execute(
                        update(HandlerState)
                        .where(HandlerState.event_id == bindparam("b_event_id"),
                               HandlerState.worker == self.name, HandlerState.state == "running")
                        .values(state=bindparam("b_state"), attempts=bindparam("b_attempts"),
                                done=bindparam("b_done", type_=JSON()),
                                due_at=bindparam("b_due_at", type_=HandlerState.due_at.type),
                                last_error=bindparam("b_last_error"), worker=None,
                                updated_at=now),
                        [{"b_event_id": r.claim.event_id, "b_state": r.state,
                          "b_attempts": r.attempts, "b_done": r.done,
                          "b_due_at": now + timedelta(seconds=r.due_in),
                          "b_last_error": r.last_error} for r in results])
                if still_held and time.monotonic() > self._lease_until - self.settings.lease / 2:
                    # Half the lease is gone: renew it for the events still waiting their turn.
                    self._lease_until = time.monotonic() + self.settings.lease
                    connection.execute(
                        update(HandlerState)
                        .where(HandlerState.event_id.in_(still_held),
                               HandlerState.worker == self.name)
                        .values(due_at=now + timedelta(seconds=self.settings.lease)))

    # -- waiting ----------------------------------------------------------------------------

    def _next_due(self):
        connection = self._connect()
        with connection.begin():
            due = connection.execute(select_(func.min(HandlerState.due_at)).where(BACKLOG)).scalar()
        wait = self.settings.poll_interval
        if due is not None:
            wait = min(wait, max(0.0, (due - utcnow()).total_seconds()))
        return wait

    def _listen(self):
        if self.dialect != "postgresql":
            return
        try:
            raw = self.engine.raw_connection()
            listener = raw.driver_connection
            raw.detach()  # kept for LISTEN as long as the worker runs, never back in the pool
            listener.autocommit = True
            listener.execute(f"LISTEN {CHANNEL}")
            self._listener = listener
        except Exception as exc:  # polling still works: say so, and carry on
            log.warning("cannot LISTEN for new events (%s); polling every %s s", exc,
                        self.settings.poll_interval)

    def _wait(self, seconds):
        if seconds <= 0:
            self._discovered_at = 0.0
            return
        if self._want_listen and self._listener is None and time.monotonic() > self._listen_retry:
            self._listen_retry = time.monotonic() + 10
            self._listen()
        fds = [self._wake_r]
        if self._listener is not None:
            try:
                fds.append(self._listener.pgconn.socket)
            except Exception:  # closed under us: poll, listen again later
                self._listener = None
        ready, _, _ = select.select(fds, [], [], seconds)
        self._discovered_at = 0.0  # woken or timed out: look for new events at once
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        if self._listener is not None and len(fds) > 1 and fds[1] in ready:
            try:
                for _notify in self._listener.notifies(timeout=0):
                    pass
            except Exception as exc:  # the connection broke: poll, and listen again later
                log.warning("LISTEN connection lost (%s); polling", exc)
                self._listener = None

    def _trap_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return []
        restore = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            restore.append((signum, signal.signal(signum, lambda *_: self.stop())))
        return restore

    def _drop_connection(self):
        if self._connection is not None:
            try:
                self._connection.invalidate()
                self._connection.close()
            except SQLAlchemyError:
                pass
            self._connection = None

    def _connect(self):
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            if self._connection is not None:
                self._connection.close()
            self._connection = self.engine.connect()
        return self._connection


class Runner:
    """A thread that runs the handler calls handed to it, one at a time, each within a timeout.

    Kept between attempts: starting a thread per attempt cost about 100 µs (300 under load),
    handing a call to a waiting thread a fraction of that. One that overruns is retired (a new
    runner takes the next call) and has HandlerTimeout raised inside it.
    """

    def __init__(self):
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._job, self._retired = None, False
        self.thread = threading.Thread(target=self._loop, name="handler runner",
                                       daemon=True)  # one that never ends must not keep us up
        self.thread.start()

    def call(self, handler, event, timeout):
        """(outcome, error, traceback) of handler(event); timeout when it took over `timeout` s."""
        box = {}
        self._job = (handler.func, event, box)
        self._go.release()
        if self._done.acquire(timeout=timeout):
            if "ok" in box:
                return "succeeded", None, None
            return "failed", box.get("error"), box.get("traceback")
        self._retired = True
        # Where it is stuck, for the record (sys._current_frames: CPython's documented way).
        frame = sys._current_frames().get(self.thread.ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else None
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident),
                                                   ctypes.py_object(HandlerTimeout))
        return "timeout", f"did not finish within {timeout:g} s (RECEIVER_HANDLER_TIMEOUT)", stack

    @property
    def retired(self) -> bool:
        """Whether a call overran: this runner takes no more."""
        return self._retired

    def close(self):
        """Let the thread end once it is idle."""
        if not self._retired:
            self._retired, self._job = True, None
            self._go.release()

    def _loop(self):
        try:
            while True:
                self._go.acquire()
                if self._retired and self._job is None:
                    return
                func, event, box = self._job
                try:
                    func(event)
                except BaseException as exc:  # HandlerTimeout included: recorded, not raised on
                    box["error"] = f"{type(exc).__name__}: {_first_line(exc)}"
                    box["traceback"] = traceback.format_exc()
                else:
                    box["ok"] = True
                if self._retired:
                    return
                self._done.release()
        except HandlerTimeout:
            return  # arrived after the handler had returned: the thread was retired anyway


def run_handler(handler: Handler, event: Event, timeout: float, runner: Runner | None = None):
    """Run one handler on one event within `timeout` seconds: (outcome, error, traceback)."""
    own = runner is None
    runner = runner or Runner()
    try:
        return runner.call(handler, event, timeout)
    finally:
        if own:
            runner.close()


def _first_line(exc):
    return (str(exc).splitlines() or [""])[0][:1000]


# The columns of `events` a handler's Event is made of (not the headers, keys or checksums).
_EVENT_FIELDS = ("id", "event_type", "format", "received_at", "channel", "delivery_count",
                 "file_id", "file_ids", "media_url", "source_type", "source_context",
                 "procedure_task_id", "review_audio_video_task_id", "task_id", "status",
                 "event_handle", "media_name", "media_type", "storage_region", "class_id",
                 "media_created_at", "size", "duration", "width", "height", "body")


def to_event(row, attempt=1, upload=None) -> Event:
    """The Event a handler receives, from a row of `events`."""
    event = Event(
        id=row.id, event_type=row.event_type, format=row.format, received_at=row.received_at,
        channel=row.channel, delivery_count=row.delivery_count, file_id=row.file_id,
        file_ids=row.file_ids, media_url=row.media_url, source_type=row.source_type,
        source_context=row.source_context, procedure_task_id=row.procedure_task_id,
        review_audio_video_task_id=row.review_audio_video_task_id, task_id=row.task_id,
        status=row.status, event_handle=row.event_handle, media_name=row.media_name,
        media_type=row.media_type, storage_region=row.storage_region, class_id=row.class_id,
        media_created_at=row.media_created_at, size=row.size, duration=row.duration,
        width=row.width, height=row.height, body=bytes(row.body), attempt=attempt,
        upload=upload)
    return event


def linked_upload(session, row):
    """The upload (uploads table) a NewFileUpload event completes, or None.

    By FileId once CommitUpload's answer recorded it, else by the SourceContext the upload was
    tagged with (the callback can arrive before CommitUpload returns) — the same link as
    queries.upload_event_id, seen from the event's side.
    """
    match = Upload.file_id == row.file_id
    if row.source_context:
        match = or_(match, and_(Upload.file_id.is_(None), Upload.source_context == row.source_context,
                                Upload.started_at <= row.received_at))
    return session.scalars(select_(Upload).where(match).order_by(Upload.id.desc()).limit(1)).first()


def process_event(app, event_id: int, registry: Registry | None = None, *, reason: str | None = None,
                  force: bool = False) -> str:
    """Run an event's handlers now, recording the attempts; force=True re-runs a settled event.

    Returns the event's state afterwards: processed, failed (will retry), dead, no_handler, or
    running when a worker holds it at this moment (nothing is run then).
    """
    worker = Worker(app, registry)
    try:
        return worker.process_event(event_id, reason=reason, force=force)
    finally:
        worker.close()


def reset(app, event_ids) -> int:
    """Make events pending again with a fresh set of attempts (bulk replay); returns how many.

    Successes are forgotten too, so every handler runs again. Events a worker holds right now
    are left alone.
    """
    event_ids = list(event_ids)
    if not event_ids:
        return 0
    worker = Worker(app)
    now = utcnow()
    try:
        connection = worker._connect()
        with worker._turn():
            with connection.begin():
                for chunk in range(0, len(event_ids), 1000):
                    ids = event_ids[chunk:chunk + 1000]
                    # Only these events: tracking the range between them with this process's
                    # registry (none, in the web process) would settle others as no_handler.
                    worker._track(connection, now, min(ids) - 1, max(ids), ids=ids)
                reset_count = 0
                for chunk in range(0, len(event_ids), 1000):
                    ids = event_ids[chunk:chunk + 1000]
                    reset_count += connection.execute(
                        update(HandlerState)
                        .where(HandlerState.event_id.in_(ids),
                               ~and_(HandlerState.state == "running", HandlerState.due_at > now))
                        .values(state="pending", attempts=0, done=[], due_at=now, worker=None,
                                last_error=None, updated_at=now)).rowcount
        return reset_count
    finally:
        worker.close()


def backlog(connection, now=None) -> tuple[dict, float | None]:
    """The backlog by state (pending counts events not seen yet) and the oldest one's age in s.

    Reads the partial backlog index and the events past the highest tracked id: cheap while the
    worker keeps up, proportional to the backlog when it does not.
    """
    now = now or utcnow()
    counts, oldest = dict.fromkeys(("pending", "failed", "running"), 0), []
    for state_, count, first in connection.execute(
            select_(HandlerState.state, func.count(), func.min(HandlerState.event_id))
            .where(BACKLOG).group_by(HandlerState.state)):
        counts[state_] = count
        oldest.append(first)
    top = connection.execute(select_(func.max(HandlerState.event_id))).scalar() or 0
    count, first = connection.execute(
        select_(func.count(), func.min(EventRow.id)).where(EventRow.id > top)).one()
    counts["pending"] += count
    oldest.append(first)
    oldest = [event_id for event_id in oldest if event_id is not None]
    age = None
    if oldest:
        received_at = connection.execute(
            select_(EventRow.received_at).where(EventRow.id == min(oldest))).scalar()
        age = max(0.0, (now - received_at).total_seconds()) if received_at else None
    return counts, age


def worker_lock(url):
    """Hold SQLite's one-worker lock (a file beside the database); WorkerBusy if another has it."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = f"{url.database}.worker-lock"
    handle = open(path, "a")  # noqa: SIM115  (held open as long as the worker runs)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise WorkerBusy(f"another `vod-receiver work` is running on this SQLite database (it holds "
                         f"{path}); SQLite runs one worker at a time, PostgreSQL any number") from None
    return handle


def _abandoned_error(row):
    return (f"worker {row.worker} stopped before recording an outcome (claimed at "
            f"{row.claimed_at.isoformat() if row.claimed_at else '?'}, lease expired)")


def _one_line(text_):
    return (text_ or "").splitlines()[0][:1000] if text_ else None
