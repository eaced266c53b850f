"""Replay: select stored rows by the admin filters (and processing state), show what today's
parser makes of their bytes, then act on them — run their handlers again, queue them for the
worker, or re-POST their exact bytes to another receiver — recording every replay in `replays`
with each row it touched in `replay_items`.

Nothing here is about events only: a Selection names its table (`subject`), the dry run
re-judges whatever bytes the table holds, and a target is any callable taking a row. Re-judging
stored rejections (`rejections reparse`) is Selection("rejections", …) + preview() + run() with
a target that hands the bytes to ingest with channel "replay".
"""
import http.client
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import and_, select

from .. import auth, db, queries, store
from ..events import Refusal
from ..models import HANDLER_STATES, Event, HandlerState, Rejection, Replay, ReplayItem, utcnow

SUBJECTS = {"events": Event, "rejections": Rejection}
# Processing states a replay selects by (an event the worker has not reached has none yet).
# Not running: a worker holds those events.
STATES = tuple(state for state in HANDLER_STATES if state != "running")
# Rows loaded (and outcomes written) per round trip: small enough that a replay's record is
# never far behind what it did, large enough that a big selection is not a query per row.
CHUNK = 200
USER_AGENT = "vod-receiver-replay"
# Outcomes that mean a row was not replayed as asked.
FAILURES = {"failed", "dead", "running", "http_error", "unreachable"}


class ReplayError(Exception):
    """A replay that cannot start (a target it cannot reach); the message says why, in one line."""


@dataclass
class Selection:
    """What a replay acts on: rows of `subject` matching the listing filters, a state, or ids."""

    subject: str = "events"
    filters: dict = field(default_factory=dict)
    state: str | None = None
    ids: tuple[int, ...] | None = None

    def row_ids(self, session) -> list[int]:
        """The ids of the selected rows, oldest first (the order they arrived in)."""
        model = SUBJECTS[self.subject]
        terms = queries.conditions(session, model, self.filters)
        if self.ids is not None:
            terms.append(model.id.in_(self.ids))
        if self.state is not None:  # the handlers' state: events only
            terms.append(_state_condition(self.state))
        statement = (select(model.id).where(and_(True, *terms))
                     .order_by(model.received_at, model.id))
        return list(session.scalars(statement))

    def describe(self) -> dict:
        """The selection as JSON, as the replay's record keeps it."""
        data = {name: _jsonable(value) for name, value in sorted(self.filters.items())}
        if self.state is not None:
            data["state"] = self.state
        if self.ids is not None:
            data["ids"] = list(self.ids)
        return data


@dataclass
class Change:
    """What today's parser makes of one stored row's bytes, where that differs from the row."""

    id: int
    label: str  # the stored event type, or the rejection's reason
    fields: dict = field(default_factory=dict)  # name -> (stored, today)
    refusal: Refusal | None = None  # today's parser refuses the bytes

    def to_dict(self):
        """The change as JSON."""
        return {"id": self.id, "label": self.label,
                "fields": {name: {"stored": _jsonable(old), "today": _jsonable(new)}
                           for name, (old, new) in self.fields.items()},
                "refusal": None if self.refusal is None else {
                    "reason": self.refusal.reason, "message": self.refusal.message}}


def preview(app, subject, row_ids, limit=None) -> list[Change]:
    """Re-parse the rows' stored bytes with today's code; the rows where the result differs.

    Reads only: the dry run of every replay. Stops after `limit` changes, if given.
    """
    compare = _event_changes if subject == "events" else _rejection_changes
    changes = []
    for rows in chunks(app, SUBJECTS[subject], row_ids):
        for row in rows:
            change = compare(row)
            if change.fields or change.refusal is not None:
                changes.append(change)
                if limit is not None and len(changes) >= limit:
                    return changes
    return changes


def run(app, selection, row_ids, target, *, reason=None, origin="cli", progress=False) -> Replay:
    """Record a replay of `row_ids`, hand each row to `target`, and record what became of it.

    `target` is a callable ((row, replay) -> (outcome, detail)) with a `name` to record, or has
    a `many` method taking a chunk of rows. The record is written first and the outcomes after
    every chunk, so an interrupted replay still says how far it got (finished_at stays empty).
    """
    replay = start(app, selection, target.name, len(row_ids), reason=reason, origin=origin)
    counts = {}
    bar = _progress_bar(len(row_ids), progress)
    try:
        for rows in chunks(app, SUBJECTS[selection.subject], row_ids):
            items = []
            try:
                if hasattr(target, "many"):  # a target that acts on a chunk at once
                    results = target.many(rows, replay)
                    items = [(row.id, *result) for row, result in zip(rows, results)]
                    bar.update(len(items))
                    continue
                for row in rows:
                    outcome, detail = target(row, replay)
                    items.append((row.id, outcome, detail))
                    bar.update(1)
            finally:  # what was done before an interruption is recorded too
                _add_items(app, replay, items, counts)
    finally:
        bar.close()
        if hasattr(target, "close"):
            target.close()
    return finish(app, replay, counts)


def attempt_reason(replay) -> str:
    """What the handler attempts a replay makes record as their reason: "replay <id>"."""
    return f"replay {replay.id}"


def succeeded(outcomes) -> bool:
    """Whether no row of a replay with these outcome counts failed."""
    return FAILURES.isdisjoint(outcome for outcome, count in outcomes.items() if count)


def failed_items(app, replay, limit=None) -> list[ReplayItem]:
    """The items of a replay whose outcome is a failure, in id order (at most `limit`)."""
    with db.session_factory(app)() as session:
        return list(session.scalars(
            select(ReplayItem).where(ReplayItem.replay_id == replay.id,
                                     ReplayItem.outcome.in_(FAILURES))
            .order_by(ReplayItem.row_id).limit(limit)))


def start(app, selection, target_name, count, *, reason=None, origin="cli") -> Replay:
    """Write the record of a replay about to act on `count` rows; returns it."""
    replay = Replay(started_at=utcnow(), reason=reason, origin=origin, subject=selection.subject,
                    selection=selection.describe(), target=target_name, selected=count,
                    outcomes={})
    with db.session_factory(app)() as session, session.begin():
        session.add(replay)
    return replay


def finish(app, replay, counts) -> Replay:
    """Mark the replay done with its outcome counts; returns it."""
    with db.session_factory(app)() as session, session.begin():
        row = session.get(Replay, replay.id)
        row.outcomes, row.finished_at = dict(sorted(counts.items())), utcnow()
    return row


def _add_items(app, replay, items, counts):
    if not items:
        return
    for _row_id, outcome, _detail in items:
        counts[outcome] = counts.get(outcome, 0) + 1
    with db.session_factory(app)() as session, session.begin():
        session.add_all(ReplayItem(replay_id=replay.id, row_id=row_id, outcome=outcome,
                                   detail=detail) for row_id, outcome, detail in items)
        session.get(Replay, replay.id).outcomes = dict(sorted(counts.items()))


def chunks(app, model, row_ids):
    """The rows of `model` with `row_ids`, in that order, a list of at most CHUNK at a time."""
    # Each chunk is read in a session of its own, closed before its rows are acted on: on
    # SQLite a handler's writes must not wait behind a transaction this loop holds open.
    for begin in range(0, len(row_ids), CHUNK):
        ids = row_ids[begin:begin + CHUNK]
        with db.session_factory(app)() as session:
            found = {row.id: row for row in session.scalars(select(model).where(model.id.in_(ids)))}
        yield [found[row_id] for row_id in ids if row_id in found]  # gone since: nothing to do


def _event_changes(row):
    verdict = store.judge(store.Delivery(body=row.body))
    change = Change(row.id, row.event_type)
    if isinstance(verdict, Refusal):
        change.refusal = verdict
        return change
    today = {"format": verdict.format, "event_type": verdict.event_type,
             "data_key": verdict.data_key, "dedup_key": verdict.dedup_key, **verdict.fields}
    for name, value in today.items():
        stored = getattr(row, name)
        if _comparable(stored) != _comparable(value):
            change.fields[name] = (stored, value)
    return change


def _rejection_changes(row):
    # A rejection refused for who sent it (token, signature, address, size) is not about the
    # bytes: re-parsing them says nothing about whether it would be refused today.
    verdict = store.judge(store.Delivery(body=row.body))
    change = Change(row.id, row.reason)
    if isinstance(verdict, Refusal):
        if verdict.reason != row.reason:
            change.fields["reason"] = (row.reason, verdict.reason)
        return change
    change.fields["reason"] = (row.reason, None)
    change.fields["event_type"] = (None, verdict.event_type)
    return change


def _comparable(value):
    # The database hands datetimes back in UTC and JSON lists as lists; the parser may give
    # another offset of the same instant.
    if isinstance(value, datetime):
        return value.timestamp()
    return value


def _jsonable(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


class _NoBar:
    def update(self, _n):
        pass

    def close(self):
        pass


def _progress_bar(total, progress):
    # Off unless asked for and stderr is a terminal: a bar in a log file is noise.
    if not (progress and sys.stderr.isatty()):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="event", file=sys.stderr, dynamic_ncols=True)


# Targets: callables taking a row and the replay and answering (outcome, detail), named for
# the record.

class Pacer:
    """At most `rate` calls of wait() return per second, evenly spaced; None means no limit."""

    def __init__(self, rate=None, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1 / rate if rate else 0
        self.clock, self.sleep = clock, sleep
        self._next = None

    def wait(self):
        """Block until the next call is due."""
        if not self.interval:
            return
        now = self.clock()
        if self._next is not None and self._next > now:
            self.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


class Post:
    """Re-POST each row's exact stored bytes, with its original Content-Type, to a URL."""

    def __init__(self, url, rate=None, timeout=10):
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError for a port out of range)
        except ValueError as exc:
            raise ReplayError(f"--to: {url!r} is not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ReplayError(f"--to must be an http:// or https:// URL, not {url!r}")
        self.url, self.parts, self.timeout = url, parts, timeout
        # The staging receiver's URL token (and any password) stays out of the record.
        self.name = auth.redact(parts._replace(netloc=_without_password(parts)).geturl())
        self.pacer = Pacer(rate)
        self._connection = None

    def __call__(self, row, _replay):
        self.pacer.wait()
        headers = {"User-Agent": USER_AGENT}
        if row.content_type:
            headers["Content-Type"] = row.content_type
        path = self.parts.path or "/"
        if self.parts.query:
            path += f"?{self.parts.query}"
        for attempt in (1, 2):
            try:
                connection = self._connect()
                connection.request("POST", path, body=row.body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept-alive connection the server had closed fails once: retry on a new one
                # (should the first have arrived after all, a receiver counts it a duplicate).
                if attempt == 2:
                    return "unreachable", f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= response.status < 300:
            return "sent", str(response.status)
        return "http_error", f"{response.status} {answer[:300].decode('utf-8', 'replace')}"

    def _connect(self):
        if self._connection is None:
            kind = (http.client.HTTPSConnection if self.parts.scheme == "https"
                    else http.client.HTTPConnection)
            self._connection = kind(self.parts.hostname, self.parts.port, timeout=self.timeout)
        return self._connection

    def close(self):
        """Close the kept-alive connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _without_password(parts):
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.username}@{netloc}" if parts.username else netloc


class Handlers:
    """Run each event's handlers again, now, in this process (processed and dead ones too)."""

    name = "handlers"

    def __init__(self, app, registry=None):
        self.app, self.registry = app, registry
        self._worker = None  # one for the whole replay: its connection is kept between events

    def __call__(self, row, replay):
        from . import worker

        if self._worker is None:
            self._worker = worker.Worker(self.app, self.registry)
        state = self._worker.process_event(row.id, reason=attempt_reason(replay), force=True)
        if state == "running":  # a worker holds it at this moment: nothing was run
            return "running", "a worker was running its handlers; replay it again later"
        with db.session_factory(self.app)() as session:
            last_error = session.scalar(select(HandlerState.last_error)
                                        .where(HandlerState.event_id == row.id))
        return state, last_error if state in FAILURES else None

    def close(self):
        """Close the worker's connection."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None


class Queue:
    """Mark events pending with fresh attempts, for `vod-receiver work` to run them again."""

    name = "queue"

    def __init__(self, app):
        self.app = app

    def many(self, rows, _replay):
        """Queue a chunk of events in one transaction; (outcome, detail) of each."""
        from . import worker

        ids = [row.id for row in rows]
        worker.reset(self.app, ids)
        with db.session_factory(self.app)() as session:
            states = dict(session.execute(select(HandlerState.event_id, HandlerState.state)
                                          .where(HandlerState.event_id.in_(ids))).all())
        # reset() leaves alone an event a worker is running right now.
        return [("queued", None) if states.get(row_id) == "pending"
                else ("running", "a worker was running its handlers; not queued") for row_id in ids]


def _state_condition(state):
    return Event.id.in_(select(HandlerState.event_id).where(HandlerState.state == state))
