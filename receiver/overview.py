"""The operator page's overview: callbacks per hour and per day, the all-time ledger, and where
the spool, the handlers and our uploads stand — without scanning the events table.

Counting a million events takes seconds (queries.stats reads every row), so closed hours are
counted once into `callback_hours` (by kind: events, duplicates, rejections; and by key: the
event type or rejection reason) and only the hours since are counted live, through the
received_at indexes. The counting happens here, when the overview is read, not on the callback
path: storing a callback writes nothing more than it did. Duplicates are counted from
`duplicate_deliveries`, which a trigger on events.delivery_count fills (migration 0010).

An hour is counted once SETTLE has passed since it closed: every delivery received in it has
been committed or spooled by then (the writer's deadline is seconds). What arrives later with
an earlier received_at — a drained spool file, a re-parsed rejection — calls invalidate(), and
the hours from then on are counted again.
"""
from datetime import datetime, time, timedelta, timezone

from sqlalchemy import and_, bindparam, case, delete, func, insert, literal, select, text, update

from sqlalchemy.exc import IntegrityError

from . import db, queries, spool
from .handlers import worker
from .models import (TROUBLE, CallbackHour, DuplicateDelivery, Event, HandlerState, Rejection,
                     RollupMark, Upload, UTCDateTime, WAITING, utcnow)

SETTLE = timedelta(minutes=2)
HOURS, DAYS = 24, 30
MARK = "callback_hours"
KINDS = ("events", "duplicates", "rejections")


def summary(session, spool_dir, now=None) -> dict:
    """Everything the overview shows, read with bounded, indexed queries."""
    now = now or utcnow()
    until = refresh(session, now)
    first_day = datetime.combine(now.date(), time(), timezone.utc) - timedelta(days=DAYS - 1)
    first_hour = _floor(now) - timedelta(hours=HOURS - 1)
    hours = {first_hour + timedelta(hours=i): dict.fromkeys(KINDS, 0) for i in range(HOURS)}
    days = {(first_day + timedelta(days=i)).date(): dict.fromkeys(KINDS, 0) for i in range(DAYS)}
    totals = {}  # (kind, key) -> count, all time
    recent = session.execute(
        select(CallbackHour.hour, CallbackHour.kind, func.sum(CallbackHour.count))
        .where(CallbackHour.hour >= first_day).group_by(CallbackHour.hour, CallbackHour.kind))
    for hour, kind, count in [*recent, *_live(session, until, totals)]:
        count = int(count)  # PostgreSQL's sum() of a bigint is a numeric
        if hour in hours:
            hours[hour][kind] += count
        if hour.date() in days:
            days[hour.date()][kind] += count
    for kind, key, count in session.execute(
            select(CallbackHour.kind, CallbackHour.key, func.sum(CallbackHour.count))
            .group_by(CallbackHour.kind, CallbackHour.key)):
        totals[kind, key] = totals.get((kind, key), 0) + int(count)
    ledger = {kind: sum(c for (k, _key), c in totals.items() if k == kind) for kind in KINDS}
    ledger["deliveries"] = sum(ledger.values())
    ledger["resolved"] = session.scalar(
        select(func.count()).select_from(Rejection).where(Rejection.resolved_at.is_not(None)))
    types = sorted({key for kind, key in totals if kind != "rejections"})
    return {
        "hours": [{"start": start, **counts} for start, counts in hours.items()],
        "days": [{"day": day, **counts} for day, counts in days.items()],
        "ledger": ledger,
        "event_types": [{"event_type": t, "events": totals.get(("events", t), 0),
                         "duplicates": totals.get(("duplicates", t), 0)} for t in types],
        "rejection_reasons": [{"reason": key, "rejections": count}
                              for (kind, key), count in sorted(totals.items())
                              if kind == "rejections" and count],
        "spool": spool.status(spool_dir),
        "handlers": handlers(session, now),
        "uploads": uploads(session, now),
    }


def refresh(session, now=None) -> datetime | None:
    """Count the settled hours not yet in callback_hours; returns the hour counted up to.

    Reads first and writes only the result, in a short transaction of its own (the session's
    is committed): on SQLite the write lock is held for the insert, not for the counting.
    """
    settled = _floor((now or utcnow()) - SETTLE)
    mark = _mark(session)
    if mark.filled_until is not None and mark.filled_until >= settled:
        return mark.filled_until
    rows = _count(session, mark.filled_until, settled)
    session.rollback()  # ends the read before the write: SQLite lets one writer in
    with db.write_turn():
        # Written only if no one filled or invalidated meanwhile: the version says so.
        claimed = session.execute(
            update(RollupMark).where(RollupMark.name == MARK, RollupMark.version == mark.version)
            .values(filled_until=settled, version=RollupMark.version + 1)).rowcount
        if claimed and rows:
            session.execute(insert(CallbackHour), [
                {"hour": hour, "kind": kind, "key": key, "count": count}
                for hour, kind, key, count in rows])
        session.commit()
    return settled if claimed else _mark(session).filled_until


def _mark(session):
    # The migration writes the row; it is made again if the table was emptied.
    query = select(RollupMark.filled_until, RollupMark.version).where(RollupMark.name == MARK)
    mark = session.execute(query).one_or_none()
    if mark is None:
        try:
            with db.write_turn():
                session.execute(insert(RollupMark).values(name=MARK, filled_until=None, version=0))
                session.commit()
        except IntegrityError:  # made by a concurrent request meanwhile
            session.rollback()
        mark = session.execute(query).one()
    return mark


def invalidate(session, since):
    """Count again, from the hour of `since`, what may have changed before it: call after
    storing deliveries received earlier than SETTLE ago, in the same transaction or after it."""
    hour = _floor(since)
    session.execute(delete(CallbackHour).where(CallbackHour.hour >= hour))
    earlier = case((RollupMark.filled_until > hour, literal(hour, UTCDateTime())),
                   else_=RollupMark.filled_until)  # NULL (nothing counted yet) stays NULL
    session.execute(update(RollupMark).where(RollupMark.name == MARK)
                    .values(filled_until=earlier, version=RollupMark.version + 1))


def handlers(session, now) -> dict:
    """The handlers' backlog by state, the dead, and the oldest pending event's age in s."""
    counts, oldest = worker.backlog(session.connection(), now)
    trouble = dict(session.execute(
        select(HandlerState.state, func.count()).where(text(TROUBLE))
        .group_by(HandlerState.state)).all())
    return {**counts, "dead": trouble.get("dead", 0), "oldest_pending_seconds": oldest}


def uploads(session, now) -> dict:
    """How many uploads wait for VOD's callback (the oldest's age in s), and how many failed."""
    waiting = text(WAITING)  # as written, for SQLite to use ix_uploads_waiting
    # Only the uploads not yet seen notified are looked up, and those found are remembered: a
    # look costs what is still waiting, not every upload there ever was.
    event_id = queries.upload_event_id()
    found = session.execute(select(Upload.id, event_id).where(waiting, event_id.is_not(None))).all()
    if found:
        session.rollback()
        table = Upload.__table__
        with db.write_turn():
            session.execute(update(table).where(table.c.id == bindparam("upload_id"),
                                               table.c.event_id.is_(None))
                            .values(event_id=bindparam("linked")),
                            [{"upload_id": u, "linked": e} for u, e in found])
            session.commit()
    count, first = session.execute(select(func.count(), func.min(Upload.started_at))
                                   .where(waiting)).one()
    failed = session.scalar(select(func.count()).select_from(Upload).where(Upload.state == "failed"))
    return {"waiting": count, "failed": failed,
            "oldest_waiting_seconds": (now - first).total_seconds() if first else None}


def _live(session, since, totals):
    # The hours not in callback_hours yet, counted from the rows; added to `totals` as well.
    rows = _count(session, since, None)
    for _hour, kind, key, count in rows:
        totals[kind, key] = totals.get((kind, key), 0) + count
    return [(hour, kind, count) for hour, kind, _key, count in rows]


def _count(session, start, end):
    # (hour, kind, key, count) of what was received in [start, end); None is open-ended.
    def window(column):
        return and_(True, *([column >= start] if start is not None else []),
                    *([column < end] if end is not None else []))

    hour = _hour(session)
    sources = (  # kind, when, key, count, FROM and WHERE
        ("events", Event.received_at, Event.event_type, func.count(), lambda q: q),
        ("duplicates", DuplicateDelivery.received_at, Event.event_type,
         func.sum(DuplicateDelivery.deliveries),
         lambda q: q.select_from(DuplicateDelivery).join(Event, Event.id == DuplicateDelivery.event_id)),
        # A rejection re-parsed into an event is counted as that event (reparse invalidates).
        ("rejections", Rejection.received_at, Rejection.reason, func.count(),
         lambda q: q.where(Rejection.resolved_at.is_(None))),
    )
    rows = []
    for kind, when, key, count, shape in sources:
        bucket = hour(when)
        statement = shape(select(bucket, key, count)).where(window(when)).group_by(bucket, key)
        rows += [(_parse_hour(b), kind, k, int(c)) for b, k, c in session.execute(statement)]
    return rows


def _hour(session):
    if session.get_bind().dialect.name == "postgresql":
        return lambda column: func.date_trunc("hour", func.timezone("UTC", column))
    # SQLite keeps UTC datetimes as ISO text: the hour is its first thirteen characters.
    return lambda column: func.substr(column, 1, 13)


def _parse_hour(value):
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
    return value.replace(tzinfo=timezone.utc)


def _floor(moment):
    return moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)

