"""Re-judge stored rejections with today's parser: a body an older, stricter parser refused
becomes the event it was, and its rejection is marked resolved. No Flask request needed; the
CLI (`vod-receiver rejections reparse`) is a thin wrapper, and the admin API can call it too.

Only refusals of the body itself are re-judged. Who sent it, where, how and how much (token,
signature, address, size, method, path) were judged on the request, which is gone: a delivery
refused for those reasons never becomes an event, whatever its body says.

The event goes through the one front door (ingest.ingest) with the delivery as it was kept:
its bytes, received_at, headers, sender and channel. The channel stays the original one
("push"): it says how VOD delivered the event, and received_at says when; what re-judged it is
recorded on the rejection (resolved_at, resolved_event_id), not by pretending it was a replay.
"""
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update

from . import db, events, overview
from .events import Refusal
from .ingest import ingest
from .models import Event, Rejection, utcnow
from .queries import MAX_ID
from .store import Delivery

# The refusals a later parser may see differently: judgements of the body, or of storing it.
REJUDGED_REASONS = ("invalid_json", "not_an_object", "unknown_format", "invalid_event",
                    "store_failed", "spool_unreadable")
BATCH = 200
_COLUMNS = (Rejection.id, Rejection.reason, Rejection.received_at, Rejection.body,
            Rejection.channel, Rejection.content_type, Rejection.remote_addr, Rejection.headers,
            Rejection.method, Rejection.path)


class NotRejudged(ValueError):
    """A filter that asks for refusals which are never re-judged."""


@dataclass
class Change:
    """What today's parser makes of one rejection."""

    rejection_id: int
    reason: str
    received_at: datetime
    verdict: events.ParsedEvent | Refusal
    event_id: int | None = None  # the event it is (or would be a duplicate of), if stored yet
    duplicate: bool = False  # of an event stored before (or earlier in this run)

    @property
    def becomes_event(self):
        """Whether today's parser stores the body as an event."""
        return not isinstance(self.verdict, Refusal)


@dataclass
class Report:
    """A re-judging run: counts, the first changes (`shown`), and ids asked for but skipped."""

    considered: int = 0
    new: int = 0  # events not stored before
    duplicates: int = 0  # deliveries of events stored already
    still_refused: int = 0
    spooled: int = 0  # the database failed: stored when the spool drains, and the run stopped
    through_id: int = 0  # the highest rejection id considered: confirm, then apply up to it
    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def to_events(self):
        """How many rejections become (or became) events."""
        return self.new + self.duplicates


def check_reason(reason):
    """Raise NotRejudged unless `reason` is one of the refusals that may be re-judged."""
    if reason is not None and reason not in REJUDGED_REASONS:
        raise NotRejudged(f"{reason!r} refusals are never re-judged; only judgements of the body "
                          f"are: {', '.join(REJUDGED_REASONS)}.")


def reparse(app, filters=None, ids=(), dry_run=True, through_id=None, shown=50) -> Report:
    """Re-judge the unresolved body refusals matching `filters` (reason, received_after,
    received_before) and `ids`; unless `dry_run`, store those that parse now and resolve them."""
    filters = filters or {}
    check_reason(filters.get("reason"))
    report = Report()
    ids = sorted(set(ids))
    report.skipped = _skipped(app, ids)
    wanted = [i for i in ids if 0 < i <= MAX_ID]
    if ids and not wanted:
        return report
    factory = db.session_factory(app)
    seen_keys = set()  # dedup keys this run stores, or would store
    after = 0
    while True:
        with factory() as session:  # closed before ingesting: SQLite lets one writer in
            rows = session.execute(_candidates(filters, wanted, after, through_id)).all()
            if not rows:
                break
            judged = [(row, _judge(row.body)) for row in rows]
            if dry_run:
                stored = _stored_events(session, {v.dedup_key for _row, v in judged
                                                  if not isinstance(v, Refusal)})
        for row, verdict in judged:
            after = report.through_id = row.id
            report.considered += 1
            change = Change(row.id, row.reason, row.received_at, verdict)
            if isinstance(verdict, Refusal):
                report.still_refused += 1
            elif dry_run:
                change.event_id = stored.get(verdict.dedup_key)
                change.duplicate = verdict.dedup_key in stored or verdict.dedup_key in seen_keys
                _count(report, change.duplicate)
                seen_keys.add(verdict.dedup_key)
            else:
                outcome = _store(app, row, change)
                if outcome == "spooled":
                    report.spooled += 1
                    report.changes.append(change)
                    return report
                if outcome == "rejected":  # ingest judges as events.parse did: not expected
                    report.still_refused += 1
                else:
                    change.duplicate = outcome == "duplicate"
                    _count(report, change.duplicate)
            if len(report.changes) < shown:
                report.changes.append(change)
    return report


def _candidates(filters, ids, after, through_id):
    query = (select(*_COLUMNS)
             .where(Rejection.resolved_at.is_(None), Rejection.reason.in_(REJUDGED_REASONS),
                    # Only a body kept whole can be judged again (only body_too_large truncates).
                    Rejection.body_truncated.is_(False), Rejection.id > after)
             .order_by(Rejection.id).limit(BATCH))
    if "reason" in filters:
        query = query.where(Rejection.reason == filters["reason"])
    if "received_after" in filters:
        query = query.where(Rejection.received_at >= filters["received_after"])
    if "received_before" in filters:
        query = query.where(Rejection.received_at < filters["received_before"])
    if ids:
        query = query.where(Rejection.id.in_(ids))
    if through_id is not None:
        # What was previewed and confirmed, not what arrived since.
        query = query.where(Rejection.id <= through_id)
    return query


def _judge(body):
    try:
        return events.parse(body)
    except Refusal as refusal:
        return refusal


def _stored_events(session, keys):
    if not keys:
        return {}
    return dict(session.execute(select(Event.dedup_key, Event.id)
                                .where(Event.dedup_key.in_(keys))).all())


def _count(report, duplicate):
    if duplicate:
        report.duplicates += 1
    else:
        report.new += 1


def _store(app, row, change):
    delivery = Delivery(body=row.body, received_at=row.received_at, channel=row.channel,
                        content_type=row.content_type, remote_addr=row.remote_addr,
                        headers=row.headers, method=row.method, path=row.path)
    verdict, outcome = ingest(delivery, app=app)
    change.verdict = verdict
    if outcome not in ("stored", "duplicate"):
        return outcome
    with db.session_factory(app)() as session, session.begin():
        change.event_id = session.scalar(select(Event.id).where(Event.dedup_key == verdict.dedup_key))
        # A crash between the event's commit and this one leaves the rejection unresolved: the
        # next run stores it again as a duplicate. Counted twice, never lost (as the spool does).
        session.execute(update(Rejection)
                        .where(Rejection.id == row.id, Rejection.resolved_at.is_(None))
                        .values(resolved_at=utcnow(), resolved_event_id=change.event_id))
        # The hour it was received in now counts an event, not a rejection.
        overview.invalidate(session, row.received_at)
    return outcome


def _skipped(app, ids):
    """(id, why) for each of `ids` that is not an unresolved body refusal kept whole."""
    if not ids:
        return []
    valid = [i for i in ids if 0 < i <= MAX_ID]
    with db.session_factory(app)() as session:
        found = {row.id: row for row in session.execute(
            select(Rejection.id, Rejection.reason, Rejection.resolved_event_id,
                   Rejection.resolved_at, Rejection.body_truncated)
            .where(Rejection.id.in_(valid))).all()} if valid else {}
    skipped = []
    for rejection_id in ids:
        row = found.get(rejection_id)
        if row is None:
            why = "no rejection with this id"
        elif row.reason not in REJUDGED_REASONS:
            why = f"{row.reason}: not a judgement of the body, never re-judged"
        elif row.resolved_at is not None:
            why = f"resolved already (event {row.resolved_event_id})"
        elif row.body_truncated:
            why = "only the first bytes of the body were kept"
        else:
            continue
        skipped.append((rejection_id, why))
    return skipped
