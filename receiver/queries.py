"""Queries over stored events, rejections and uploads, shared by the admin API and the CLI.

Listings are newest first and paged by keyset on (received_at, id): a cursor names the last row
of a page and the next page starts strictly after it, so a deep page costs what the first one
does (no OFFSET scan) and rows arriving meanwhile neither shift nor repeat entries.
"""
import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import and_, case, func, or_, select, text

from .models import (TROUBLE, Event, HandlerAttempt, HandlerState, Rejection, Replay, ReplayItem,
                     Upload)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_ID = 2**63 - 1
_TOP = "\U0010ffff"  # the highest code point

EVENT_SUMMARY = (Event.id, Event.received_at, Event.last_seen_at, Event.event_type, Event.format,
                 Event.channel, Event.status, Event.file_id, Event.task_id, Event.source_type,
                 Event.source_context, Event.procedure_task_id, Event.delivery_count)
REJECTION_SUMMARY = (Rejection.id, Rejection.received_at, Rejection.reason, Rejection.status_code,
                     Rejection.message, Rejection.channel, Rejection.method, Rejection.path,
                     Rejection.remote_addr, Rejection.body_size, Rejection.body_truncated,
                     Rejection.resolved_at, Rejection.resolved_event_id)


class InvalidCursor(ValueError):
    """A cursor that this service did not hand out."""


@dataclass
class Page:
    """One page of a listing and the cursor of the next (None on the last page)."""

    items: list
    next_cursor: str | None


def list_events(session, filters=None, limit=DEFAULT_LIMIT, cursor=None) -> Page:
    """Events matching `filters` (the admin API's query parameters), newest first."""
    filters = filters or {}
    conditions = [*_event_terms(session, filters), *_window(Event, filters, cursor)]
    return _page(session, EVENT_SUMMARY, Event, conditions, limit)


def _event_terms(session, filters):
    keyed = not _KEYS.isdisjoint(filters)
    conditions = []
    for name in _EVENT_COLUMNS.intersection(filters):
        column = getattr(Event, name)
        if keyed and name not in _KEYS:
            # With a key to look up by, SQLite (planning without statistics) would still rather
            # walk the (event_type, received_at, id) index in order than sort the key's few
            # rows; `|| ''` keeps this term off any index (SQLite's own idiom is a unary +).
            column = column.concat("")
        conditions.append(column == filters[name])
    if "source_context_prefix" in filters:
        conditions.append(_prefix(session, Event.source_context, filters["source_context_prefix"]))
    return conditions


def list_rejections(session, filters=None, limit=DEFAULT_LIMIT, cursor=None) -> Page:
    """Rejections matching `filters` (reason, time range), newest first."""
    filters = filters or {}
    conditions = [*_rejection_terms(filters), *_window(Rejection, filters, cursor)]
    return _page(session, REJECTION_SUMMARY, Rejection, conditions, limit)


def _rejection_terms(filters):
    return [Rejection.reason == filters["reason"]] if "reason" in filters else []


def conditions(session, model, filters) -> list:
    """The WHERE terms of a listing's filters on `model` (Event or Rejection), without paging.

    For code that selects every matching row rather than a page: replay, export, reparse.
    """
    terms = _event_terms(session, filters) if model is Event else _rejection_terms(filters)
    return [*terms, *_window(model, filters, None)]


def get_event(session, event_id) -> Event | None:
    """The stored event with `event_id`, or None."""
    return session.get(Event, event_id) if 0 < event_id <= MAX_ID else None


def get_rejection(session, rejection_id) -> Rejection | None:
    """The recorded rejection with `rejection_id`, or None."""
    return session.get(Rejection, rejection_id) if 0 < rejection_id <= MAX_ID else None


def stats(session) -> dict:
    """Counts by event type, by day and by rejection reason, and the delivery ledger."""
    # One pass over the events (grouped by both at once): counting duplicates reads every row.
    event_day = _day(session, Event.received_at)
    rejection_day = _day(session, Rejection.received_at)
    by_type, by_day = {}, {}
    for event_type, day, count, deliveries in session.execute(
        select(Event.event_type, event_day, func.count(), func.sum(Event.delivery_count))
        .group_by(Event.event_type, event_day)
    ):
        _add(by_type, event_type, {"event_type": event_type, "events": count,
                                   "duplicates": deliveries - count})
        _add(by_day, day, {"day": day, "events": count, "duplicates": deliveries - count,
                           "rejections": 0})
    # A rejection a later parser stored as an event is counted there (its delivery_count) and
    # no longer here, so the ledger still balances.
    refused = Rejection.resolved_at.is_(None)
    by_reason = dict(session.execute(
        select(Rejection.reason, func.count()).where(refused).group_by(Rejection.reason)).all())
    resolved = session.scalar(select(func.count()).select_from(Rejection).where(~refused))
    for day, count in session.execute(
            select(rejection_day, func.count()).where(refused).group_by(rejection_day)):
        _add(by_day, day, {"day": day, "events": 0, "duplicates": 0, "rejections": count})
    events = sum(row["events"] for row in by_type.values())
    duplicates = sum(row["duplicates"] for row in by_type.values())
    rejections = sum(by_reason.values())
    return {
        "by_event_type": [by_type[key] for key in sorted(by_type)],
        "by_day": [by_day[key] for key in sorted(by_day, reverse=True)],
        "rejections_by_reason": [{"reason": r, "rejections": by_reason[r]} for r in sorted(by_reason)],
        # Every delivery that reached the database is exactly one of these three.
        "ledger": {"deliveries": events + duplicates + rejections, "events": events,
                   "duplicates": duplicates, "rejections": rejections, "resolved": resolved},
        "handling": handling(session, events),
    }


def handling(session, events) -> dict:
    """Where the handlers are with the `events` stored: each is exactly one of processed, failed
    (will retry), dead, pending (running included) or no_handler."""
    counts = dict(session.execute(
        select(HandlerState.state, func.count()).group_by(HandlerState.state)).all())
    # Events the worker has not seen yet have no state row: they are pending too.
    untracked = events - sum(counts.values())
    return {"processed": counts.get("processed", 0), "failed": counts.get("failed", 0),
            "dead": counts.get("dead", 0),
            "pending": counts.get("pending", 0) + counts.get("running", 0) + untracked,
            "no_handler": counts.get("no_handler", 0), "running": counts.get("running", 0)}


def encode_cursor(received_at: datetime, row_id: int) -> str:
    """The opaque cursor naming the row at (received_at, row_id)."""
    text = json.dumps({"r": received_at.astimezone(timezone.utc).isoformat(), "i": row_id})
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """(received_at, id) from a cursor made by encode_cursor; InvalidCursor if it is not one."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        received_at, row_id = datetime.fromisoformat(data["r"]), data["i"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise InvalidCursor("Not a cursor from a previous page.") from exc
    if received_at.tzinfo is None or type(row_id) is not int or not 0 < row_id <= MAX_ID:
        raise InvalidCursor("Not a cursor from a previous page.")
    return received_at, row_id


# Query parameters that are plain equality on the column of the same name.
_EVENT_COLUMNS = {"event_type", "file_id", "source_context", "procedure_task_id", "source_type",
                  "format", "channel", "task_id"}
# Those that name a handful of events, through an index of their own.
_KEYS = {"file_id", "source_context", "source_context_prefix", "procedure_task_id", "task_id"}


def _window(model, filters, cursor):
    # The time range and the keyset, with a single upper bound on received_at: given two,
    # SQLite's planner ranges its index on one of them only, and ranging on received_before
    # instead of the cursor means walking every row above a deep page to reach it.
    conditions = []
    if "received_after" in filters:
        conditions.append(model.received_at >= filters["received_after"])
    before = filters.get("received_before")
    if cursor is not None:
        received_at, row_id = decode_cursor(cursor)
        if before is None or received_at < before:
            # Not a row-value comparison: `received_at <= r` is an index range on every backend,
            # and the OR only sorts out rows sharing that instant.
            return [*conditions, model.received_at <= received_at,
                    or_(model.received_at < received_at, model.id < row_id)]
    if before is not None:  # a cursor at or above it: every row in range is past the cursor
        conditions.append(model.received_at < before)
    return conditions


def _page(session, columns, model, conditions, limit):
    rows = session.execute(
        select(*columns).where(and_(True, *conditions))
        .order_by(model.received_at.desc(), model.id.desc()).limit(limit + 1)
    ).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].received_at, rows[-1].id)
    return Page(rows, next_cursor)


def _prefix(session, column, prefix):
    # A range, not LIKE: no escaping, and a btree index answers it. Both ends compare in code
    # point order (= UTF-8 byte order): SQLite's BINARY collation does, and on PostgreSQL the
    # pattern operators do whatever the database collation; under one such as en_US plain <
    # and >= do not keep prefixes together. The index has the matching operator class (0004).
    end = prefix_end(prefix)
    if session.get_bind().dialect.name == "postgresql":
        at_least, below = column.op("~>=~"), column.op("~<~")
    else:
        at_least, below = column.__ge__, column.__lt__
    return and_(at_least(prefix), below(end)) if end is not None else at_least(prefix)


def prefix_end(prefix):
    """The least string above every string that starts with `prefix`; None if there is none."""
    stem = prefix.rstrip(_TOP)
    if not stem:
        return None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are not characters: skip to the next one
        following = 0xE000
    return stem[:-1] + chr(following)


def _day(session, column):
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    # SQLite keeps UTC datetimes as ISO text: the day is its first ten characters.
    return func.substr(column, 1, 10)


def _add(totals, key, counts):
    # Sum the counts of `counts` into totals[key] (the names in it stay as they are).
    if key not in totals:
        totals[key] = counts
        return
    for name, value in counts.items():
        if isinstance(value, int):
            totals[key][name] += value


# Uploads (receiver.vod.upload). Whether an upload's callback came is not stored with it: it is
# the NewFileUpload event with its FileId, or, before CommitUpload's answer is recorded (VOD may
# call back first), with its SourceContext and received after the upload started. Whichever
# channel brought the event (push, pull, replay) it is in `events`, and both columns are indexed.
UPLOAD_STATES = ("started", "stored", "committed", "failed")
UPLOAD_STATUSES = ("started", "stored", "committed", "notified", "failed")


def upload_event_id(upload=None):
    """The id of the first event VOD sent about `upload` (a correlated subquery without it)."""
    row = Upload if upload is None else upload
    # `|| ''` keeps event_type off its index: given it, SQLite walks every NewFileUpload in the
    # (event_type, received_at, id) index for each upload instead of looking up its one key.
    upload_event = Event.event_type.concat("") == "NewFileUpload"
    by_file_id = select(func.min(Event.id)).where(upload_event, Event.file_id == row.file_id)
    by_context = select(func.min(Event.id)).where(
        upload_event, Event.source_context == row.source_context,
        Event.received_at >= row.started_at)
    if upload is not None:
        return by_file_id if upload.file_id is not None else by_context
    # Two subqueries, not one with an OR between the keys: each then reads its own index.
    return case((Upload.file_id.is_not(None), by_file_id.scalar_subquery()),
                else_=by_context.scalar_subquery())


def list_uploads(session, filters=None, limit=DEFAULT_LIMIT, cursor=None, now=None) -> Page:
    """Uploads matching `filters` (state, pending, older_than, ...), newest first.

    Each item is (Upload, event id or None).
    """
    filters = filters or {}
    event_id = upload_event_id().label("event_id")
    conditions = []
    for name in ("state", "file_id", "source_context", "file_sha256"):
        if name in filters:
            conditions.append(getattr(Upload, name) == filters[name])
    if filters.get("pending"):
        # Not failed and not heard of yet: still running, or committed and waiting for VOD.
        conditions += [Upload.state != "failed", event_id.is_(None)]
    if "notified" in filters:  # upload_status() is notified, or (False) is not
        notified = and_(Upload.state != "failed", event_id.is_not(None))
        conditions.append(notified if filters["notified"] else ~notified)
    if "older_than" in filters:
        conditions.append(Upload.started_at < started_before(filters["older_than"], now))
    if cursor is not None:
        started_at, row_id = decode_cursor(cursor)
        conditions += [Upload.started_at <= started_at,
                       or_(Upload.started_at < started_at, Upload.id < row_id)]
    rows = session.execute(
        select(Upload, event_id).where(and_(True, *conditions))
        .order_by(Upload.started_at.desc(), Upload.id.desc()).limit(limit + 1)).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][0].started_at, rows[-1][0].id)
    return Page([tuple(row) for row in rows], next_cursor)


def started_before(age, now=None):
    """The instant `age` before `now`; the earliest one there is if that is before year 1."""
    now = now or datetime.now(timezone.utc)
    try:
        return now - age
    except OverflowError:  # older_than=740000d: nothing started that long ago
        return datetime.min.replace(tzinfo=timezone.utc)


def get_upload(session, upload_id):
    """(Upload, its linked Event or None) for `upload_id`, or None."""
    upload = session.get(Upload, upload_id) if 0 < upload_id <= MAX_ID else None
    if upload is None:
        return None
    event_id = session.scalar(upload_event_id(upload))
    return upload, (session.get(Event, event_id) if event_id is not None else None)


def upload_status(upload, event_id):
    """started, stored, committed, notified (VOD's callback is stored) or failed."""
    if event_id is not None and upload.state != "failed":
        return "notified"
    return upload.state


def count_events(session, filters, state=None, cap=10_000) -> int:
    """How many events match `filters` (and handler `state`), counting no further than cap + 1."""
    terms = conditions(session, Event, filters)
    if state is not None:
        # The same selection as replay.Selection: events whose handler_states row is in `state`.
        terms.append(Event.id.in_(select(HandlerState.event_id).where(HandlerState.state == state)))
    # LIMIT inside: a broad filter over a million events stops at cap + 1 rows.
    capped = select(Event.id).where(and_(True, *terms)).limit(cap + 1).subquery()
    return session.scalar(select(func.count()).select_from(capped))


# The handlers listing: an event's handler_states row with the event's type.
HANDLER_SUMMARY = (HandlerState.event_id, HandlerState.state, HandlerState.attempts,
                   HandlerState.last_error, HandlerState.updated_at, HandlerState.due_at,
                   Event.event_type)


def list_handler_states(session, state=None, limit=DEFAULT_LIMIT, cursor=None) -> Page:
    """Events whose handlers are in `state` (failed or dead, both by default, latest change
    first; pending: next due first), with their type and last error."""
    if state == "pending":
        # The backlog index (due_at, event_id) answers this in order.
        order, key = (HandlerState.due_at, HandlerState.event_id), "due_at"
        terms = [HandlerState.state == "pending"]
        if cursor is not None:
            due_at, event_id = decode_cursor(cursor)
            terms += [HandlerState.due_at >= due_at,
                      or_(HandlerState.due_at > due_at, HandlerState.event_id > event_id)]
    else:
        # The partial index's own WHERE, as text (ix_handler_states_trouble): SQLite uses a
        # partial index only when the query repeats its condition, literals and all.
        order = (HandlerState.updated_at.desc(), HandlerState.event_id.desc())
        key = "updated_at"
        terms = [text(TROUBLE)]
        if state is not None:
            terms.append(HandlerState.state == state)
        if cursor is not None:
            updated_at, event_id = decode_cursor(cursor)
            terms += [HandlerState.updated_at <= updated_at,
                      or_(HandlerState.updated_at < updated_at, HandlerState.event_id < event_id)]
    rows = session.execute(
        select(*HANDLER_SUMMARY).join(Event, Event.id == HandlerState.event_id)
        .where(and_(True, *terms)).order_by(*order).limit(limit + 1)).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(getattr(rows[-1], key), rows[-1].event_id)
    return Page(rows, next_cursor)


def handler_attempts(session, event_id, limit=200) -> list:
    """The first `limit` handler attempts on one event, in the order they ran."""
    return list(session.scalars(select(HandlerAttempt).where(HandlerAttempt.event_id == event_id)
                                .order_by(HandlerAttempt.id).limit(limit)))


def list_replays(session, limit=DEFAULT_LIMIT, before_id=None) -> list:
    """Replays, newest first (by id: they are numbered as they start), at most `limit`."""
    query = select(Replay).order_by(Replay.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Replay.id < before_id)
    return list(session.scalars(query))


def replay_items(session, replay_id, limit=100) -> list:
    """The first `limit` rows a replay acted on, with what became of each, by row id."""
    return list(session.scalars(select(ReplayItem).where(ReplayItem.replay_id == replay_id)
                                .order_by(ReplayItem.row_id).limit(limit)))
