"""Operator page benchmark: server time of each /admin/ page over 1,000,000 events.

    python -m bench.web [--events 1000000] [--samples 200] [--database-url URL] [--keep]

Fills a database with bench.queries' events and rejections (moved in time so the newest arrived
a minute ago), then what the pages also read: duplicate deliveries, uploads (most linked to
their NewFileUpload event, some waiting, some failed), a handler state for every event (mostly
processed, with a succeeded attempt; some failed or dead with their attempts and tracebacks; the
newest pending) and a few replays. The overview's counters are brought up to date by one call of
overview.summary, timed on its own ("cold"). Then each page is fetched through Flask's test
client, signed in through the sign-in form, and its server time printed as p50/p95/max against
the goal (p95 under 100 ms); for a page that misses, its slowest SQL statements and the plan the
database chose for the slowest. A statement running past --stop-after seconds is stopped (its
page is reported missed, with the plan) rather than holding the run for hours.

Without --database-url: a temporary SQLite file, then PostgreSQL when RECEIVER_BENCH_POSTGRES_URL
names a server (the database vodr_bench_web is created there and dropped afterwards). With
--database-url: that database only, as bench.queries treats it (a PostgreSQL database is created
and dropped; a SQLite file is kept). --keep leaves the databases in place, and a run on one that
already holds events measures it without refilling.
"""
import argparse
import hashlib
import os
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin

from sqlalchemy import event as sa_event
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bench import queries as bench_queries
from receiver import create_app, db, overview
from receiver.models import (Event, HandlerAttempt, HandlerState, Rejection, Replay, ReplayItem,
                             Upload)

BENCH_DATABASE = "vodr_bench_web"
GOAL_P95_MS = 100
TOKEN = "bench-web-admin-token-4b1c0f"
HANDLER = "shop.hooks:on_event"
UPLOADS, WAITING_UPLOADS, FAILED_UPLOADS = 20_000, 100, 50
FAILED, DEAD, PENDING, FAILED_WITH_UPLOAD = 1_000, 200, 500, 300
REPLAYS = 50
MAX_ATTEMPTS = 5
FAILING_FOR = timedelta(hours=12)
TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/venv/lib/python3.12/site-packages/receiver/handlers/worker.py", line 671, in _run
    handler.function(event)
  File "/srv/shop/shop/hooks.py", line 42, in on_event
    order = api.orders.attach_video(event.source_context, event.file_id)
  File "/srv/shop/shop/api.py", line 118, in attach_video
    return self._post(f"/orders/{order_id}/videos", json={"file_id": file_id})
  File "/srv/shop/shop/api.py", line 77, in _post
    response.raise_for_status()
  File "/srv/shop/venv/lib/python3.12/site-packages/requests/models.py", line 1024, in raise_for_status
    raise HTTPError(http_error_msg, response=self)
requests.exceptions.HTTPError: %s
"""
ERRORS = ["503 Server Error: Service Unavailable for url: https://shop.internal/orders/%s/videos",
          "409 Client Error: Conflict for url: https://shop.internal/orders/%s/videos",
          "504 Server Error: Gateway Timeout for url: https://shop.internal/orders/%s/videos"]
UPLOAD_ERRORS = [("cos", "RequestTimeout", "Your socket connection to the server was not read from "
                  "or written to within the timeout period."),
                 ("commit", "FailedOperation.InvalidVodUser", "The VOD service is not activated."),
                 ("apply", "LimitExceeded", "The request frequency exceeds the limit.")]


def main(argv=None):
    """Fill each database (or reuse it), time every operator page, print the figures."""
    options = _parser().parse_args(argv)
    urls = [options.database_url]
    server = os.environ.get("RECEIVER_BENCH_POSTGRES_URL")
    if options.database_url is None and server:
        urls.append(make_url(server).set(database=BENCH_DATABASE).render_as_string(hide_password=False))
    elif options.database_url is None:
        print("PostgreSQL: skipped (set RECEIVER_BENCH_POSTGRES_URL or give --database-url)")
    missed = 0
    for url in urls:
        missed += _bench(url, options)
    if missed:
        print(f"\n{missed} page(s) missed the goal")


def _parser():
    parser = argparse.ArgumentParser(prog="python -m bench.web", description=main.__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to store (1,000,000)")
    parser.add_argument("--samples", type=int, default=200, help="timed requests per page (200)")
    parser.add_argument("--warm-up", type=int, default=10, help="untimed requests per page first (10)")
    parser.add_argument("--database-url", help="the one database to use (default: a temp SQLite file, "
                        "then PostgreSQL if RECEIVER_BENCH_POSTGRES_URL is set)")
    parser.add_argument("--stop-after", type=float, default=30, metavar="SECONDS",
                        help="stop a statement running longer, and report its page as missed (30)")
    parser.add_argument("--page-seconds", type=float, default=120,
                        help="stop sampling a page after this long, with fewer samples (120)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the databases in place")
    return parser


def _bench(url, options):
    """Fill (or reuse) one database and time the pages on it; the number of pages that missed."""
    with bench_queries._database(url, options.keep) as url, \
            tempfile.TemporaryDirectory(prefix="vodr-bench-web-") as spool:
        engine = db.make_engine(url)
        backend = engine.dialect.name
        stored = bench_queries._count(engine)
        if stored:
            print(f"{backend}: reusing {stored:,} stored events")
        else:
            _fill(engine, options.events, options.seed)
        engine.dispose()
        app = create_app({"RECEIVER_DATABASE_URL": url, "RECEIVER_SPOOL_DIR": spool,
                          "RECEIVER_SPOOL_DRAIN_INTERVAL": 0, "RECEIVER_LOG_FORMAT": "json",
                          "RECEIVER_ADMIN_TOKENS": TOKEN})
        # A stopped statement is an error the app logs, traceback and all: said here in one line.
        app.logger.addFilter(lambda record: not _was_stopped(record))
        try:
            _stop_after(db.engine(app), options.stop_after)
            started = time.perf_counter()
            try:
                with app.app_context(), db.session_factory(app)() as session:
                    summary = overview.summary(session, spool)
                    session.commit()
                cold = f"{(time.perf_counter() - started) * 1000:,.0f} ms"
                ledger = summary["ledger"]
                counts = (f"{ledger['events']:,} events, {ledger['duplicates']:,} duplicates, "
                          f"{ledger['rejections']:,} rejections")
            except DBAPIError as exc:
                cold = f"stopped after {options.stop_after:g} s ({type(exc.orig).__name__})"
                counts = f"{bench_queries._count(db.engine(app)):,} events"
            print(f"{backend}: {os.cpu_count()} CPUs, {counts}; first overview.summary (brings its "
                  f"counters up to date, not a goal): {cold}")
            if backend == "postgresql":
                # That call links ~20,000 uploads to their events: autovacuum (on by default)
                # analyzes the table soon after. With its statistics from before, PostgreSQL
                # expects thousands of waiting uploads and JIT-compiles the overview's look-up
                # for them, ~450 ms on every request (docs: jit_above_cost).
                with db.engine(app).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("VACUUM (ANALYZE) uploads, callback_hours"))
            client = app.test_client()
            _sign_in(client)
            pages = _pages(app, client, random.Random(options.seed + 1))
            print(f"{backend}: {options.samples} requests per page after {options.warm_up} untimed, "
                  f"server time in ms (Flask's test client, in process)")
            results = [_measure(client, name, urls, options) for name, urls in pages]
            _print(backend, results)
            missed = [r for r in results if r["stopped"] or r["p95"] >= GOAL_P95_MS]
            for r in missed:
                print(_diagnose(app, client, r))
            return len(missed)
        finally:
            db.dispose(app)


# --- the fill -----------------------------------------------------------------------------------

def _fill(engine, count, seed):
    """bench.queries' events and rejections, then the uploads, handlers, duplicates and replays."""
    started = time.perf_counter()
    backend = engine.dialect.name
    now = datetime.now(timezone.utc)
    # bench.queries' rows arrive over six months from bench_queries.START: moved so that the
    # newest arrived a minute ago, they fill the overview's charts and the `since=` shortcuts.
    shift = now - timedelta(minutes=1) - (bench_queries.START + bench_queries.SPAN)
    with engine.begin() as conn:
        # Secondary indexes are built once at the end: much faster than row by row.
        indexes = bench_queries._secondary_indexes(conn)
        for name in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
    rng = random.Random(seed)
    load = bench_queries._copy if backend == "postgresql" else bench_queries._insert
    load(engine, Event.__table__, _moved(bench_queries._event_rows(count, rng), shift, rng))
    load(engine, Rejection.__table__, _moved(bench_queries._rejection_rows(count // 100, rng), shift, rng))
    print(f"{backend}: {count:,} events and {count // 100:,} rejections in "
          f"{time.perf_counter() - started:.0f} s; building indexes")
    with engine.begin() as conn:
        for definition in indexes.values():
            conn.execute(text(definition))
    with engine.begin() as conn:
        if backend == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        linked = _fill_uploads(conn, rng, now)
        _fill_handlers(conn, rng, now, linked)
        _fill_duplicates(conn)
        _fill_replays(conn, rng, now)
    if backend == "postgresql":
        # What autovacuum (on by default) does soon after such a load: statistics, and the
        # visibility map that lets index-only scans skip the table. SQLite has no statistics
        # unless ANALYZE runs, and is measured that way, as a fresh install would be.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
    print(f"{backend}: filled in {time.perf_counter() - started:.0f} s")


def _moved(rows, shift, rng):
    for row in rows:
        row["received_at"] += shift
        if row.get("delivery_count", 1) > 1:  # VOD's retries come seconds to minutes later
            row["last_seen_at"] = row["received_at"] + timedelta(seconds=rng.uniform(5, 600))
        elif "last_seen_at" in row:
            row["last_seen_at"] = row["received_at"]
        yield row


def _fill_uploads(conn, rng, now):
    """Our own uploads: most linked to a NewFileUpload event of the last 45 days by its FileId;
    some waiting for VOD's callback (none came), some failed. The linked event ids."""
    recent = conn.execute(
        select(Event.id, Event.file_id, Event.source_context, Event.media_name, Event.received_at)
        .where(Event.event_type == "NewFileUpload", Event.received_at >= now - timedelta(days=45))
    ).all()
    linked = sorted(rng.sample(recent, min(len(recent), UPLOADS - WAITING_UPLOADS - FAILED_UPLOADS)))
    rows = []
    for event_id, file_id, source_context, media_name, received_at in linked:
        committed = received_at - timedelta(seconds=rng.uniform(1, 20))
        started = committed - timedelta(seconds=rng.uniform(5, 900))
        rows.append(_upload(rng, started, media_name, source_context, state="committed",
                            stored_at=committed - timedelta(seconds=1), committed_at=committed,
                            updated_at=committed, file_id=file_id,
                            media_url=f"https://1256768367.vod2.myqcloud.com/a1b2c3d4/{file_id}/f0.mp4"))
    for n in range(WAITING_UPLOADS):
        started = now - timedelta(hours=rng.uniform(0.1, 48))
        state = rng.choice(["committed"] * 7 + ["stored", "started", "started"])
        committed = started + timedelta(seconds=30) if state == "committed" else None
        rows.append(_upload(rng, started, f"batch {n}.mp4", f"batch-{n}", state=state,
                            stored_at=started + timedelta(seconds=29) if state != "started" else None,
                            committed_at=committed, updated_at=committed or started,
                            file_id=str(bench_queries.FIRST_FILE_ID + 10**9 + n) if committed else None))
    for n in range(FAILED_UPLOADS):
        started = now - timedelta(days=rng.uniform(0, 30))
        step, code, message = rng.choice(UPLOAD_ERRORS)
        rows.append(_upload(rng, started, f"failed {n}.mp4", f"failed-{n}", state="failed",
                            updated_at=started + timedelta(seconds=40),
                            failed_at=started + timedelta(seconds=40), failed_step=step,
                            error_code=code, error_message=message))
    rows.sort(key=lambda row: row["started_at"])
    conn.execute(insert(Upload), rows)
    return [row.id for row in linked]


def _upload(rng, started, name, source_context, **columns):
    return {"started_at": started, "file_path": f"/srv/media/{name}", "file_name": name,
            "file_size": rng.randrange(10**6, 2 * 10**9), "file_mtime_ns": 1_700_000_000 * 10**9,
            "file_sha256": hashlib.sha256(name.encode()).hexdigest(), "source_context": source_context,
            "source_context_generated": False, "media_type": "mp4", "media_name": name,
            "storage_region": "ap-guangzhou", "api_region": "ap-guangzhou", "part_size": 8 * 2**20,
            "resumes": 0, "storage_bucket": "vod-1256768367", "cos_region": "ap-guangzhou",
            "stored_at": None, "committed_at": None, "failed_at": None, "file_id": None,
            "media_url": None, "failed_step": None, "error_code": None, "error_message": None,
            **columns}


def _fill_handlers(conn, rng, now, linked):
    """A state for every event: the newest pending, some failed (retrying) or dead with their
    attempts, the rest processed with one succeeded attempt each."""
    first, last = conn.execute(select(func.min(Event.id), func.max(Event.id))).one()
    conn.execute(text(
        "INSERT INTO handler_states (event_id, state, due_at, attempts, done, updated_at) "
        f"SELECT id, 'processed', received_at, 1, '[\"{HANDLER}\"]', last_seen_at FROM events"))
    pending = list(range(last - min(PENDING, (last - first) // 10) + 1, last + 1))
    # Failing now, as when the application's API has been down for a while: the failed events
    # arrived in the last hours and are still being retried (older ones would have been retried
    # to the end by a running worker, and be dead or processed by now).
    since = conn.scalar(select(func.min(Event.id)).where(Event.received_at >= now - FAILING_FOR))
    recent_linked = [i for i in linked if since <= i < pending[0]]
    failed = set(rng.sample(recent_linked, min(FAILED_WITH_UPLOAD, len(recent_linked))))
    while len(failed) < min(FAILED, (pending[0] - since) // 2):
        failed.add(rng.randrange(since, pending[0]))
    dead = set()
    while len(dead) < min(DEAD, pending[0] - first - len(failed)):
        candidate = rng.randrange(first, pending[0])
        if candidate not in failed:
            dead.add(candidate)
    received = dict(conn.execute(select(Event.id, Event.received_at).where(
        Event.id.in_(sorted(failed | dead | set(pending))))).all())
    updates, attempts = [], []
    for event_id in pending:
        updates.append(_state(event_id, "pending", 0, received[event_id], None))
    for event_id in sorted(failed | dead):
        rounds = MAX_ATTEMPTS if event_id in dead else rng.randint(1, MAX_ATTEMPTS - 1)
        at = received[event_id]
        for number in range(1, rounds + 1):
            error = rng.choice(ERRORS) % rng.randrange(10**6)
            attempts.append({"event_id": event_id, "handler": HANDLER, "attempt": number,
                             "started_at": at, "finished_at": at + timedelta(seconds=0.3),
                             "outcome": "failed", "error": f"HTTPError: {error}",
                             "traceback": TRACEBACK % error, "worker": "worker-1", "reason": None})
            at = min(at + timedelta(seconds=10 * 2 ** number), now)
        updates.append(_state(event_id, "dead" if event_id in dead else "failed", rounds, at,
                              f"HTTPError: {error}"))
    states = HandlerState.__table__
    conn.execute(update(states).where(states.c.event_id == bindparam("b_id")).values(
        state=bindparam("b_state"), attempts=bindparam("b_attempts"), done=bindparam("b_done"),
        due_at=bindparam("b_at"), updated_at=bindparam("b_at"), last_error=bindparam("b_error")),
        updates)
    conn.execute(text(
        "INSERT INTO handler_attempts (event_id, handler, attempt, started_at, finished_at, outcome, "
        f"worker) SELECT event_id, '{HANDLER}', 1, updated_at, updated_at, 'succeeded', 'worker-1' "
        "FROM handler_states WHERE state = 'processed' ORDER BY event_id"))
    conn.execute(insert(HandlerAttempt), sorted(attempts, key=lambda a: a["started_at"]))


def _state(event_id, state, attempts, at, error):
    return {"b_id": event_id, "b_state": state, "b_attempts": attempts, "b_done": [], "b_at": at,
            "b_error": error}


def _fill_duplicates(conn):
    """The extra deliveries of each event, as the trigger of migration 0010 records them."""
    # The rows are loaded straight into `events`, so the trigger (on UPDATE) never saw them.
    conn.execute(text(
        "INSERT INTO duplicate_deliveries (event_id, received_at, deliveries) "
        "SELECT id, last_seen_at, delivery_count - 1 FROM events WHERE delivery_count > 1"))


def _fill_replays(conn, rng, now):
    """A replay every few days, each queueing some NewFileUpload events, with its items."""
    ids = conn.scalars(select(Event.id).where(Event.event_type == "NewFileUpload",
                                              Event.received_at >= now - timedelta(days=60))).all()
    for n in range(REPLAYS):
        started = now - timedelta(days=60) + timedelta(days=60) * (n / REPLAYS)
        chosen = sorted(rng.sample(ids, rng.randint(1, min(400, len(ids)))))
        replay_id = conn.execute(insert(Replay).returning(Replay.id), {
            "started_at": started, "finished_at": started + timedelta(seconds=2),
            "reason": f"shop API outage #{n}, handlers run again",
            "origin": rng.choice(["cli", "admin-api", "web"]),
            "subject": "events", "selection": {"event_type": "NewFileUpload", "state": "failed"},
            "target": "queue", "selected": len(chosen), "outcomes": {"queued": len(chosen)}}).scalar_one()
        conn.execute(insert(ReplayItem), [{"replay_id": replay_id, "row_id": row_id, "outcome": "queued",
                                           "detail": None} for row_id in chosen])


# --- the pages ----------------------------------------------------------------------------------

class _Links(HTMLParser):
    """The hidden csrf_token and the rel="next" link of a page."""

    def __init__(self):
        super().__init__()
        self.csrf, self.next = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name") == "csrf_token":
            self.csrf = attrs.get("value")
        if tag == "a" and "next" in (attrs.get("rel") or "").split():
            self.next = attrs.get("href")


def _parse(response):
    links = _Links()
    links.feed(response.get_data(as_text=True))
    return links


def _sign_in(client):
    form = _parse(client.get("/admin/sign-in"))
    data = {"token": TOKEN}
    if form.csrf is not None:
        data["csrf_token"] = form.csrf
    response = client.post("/admin/sign-in", data=data)
    if response.status_code != 303:
        raise SystemExit(f"signing in answered {response.status_code}, not 303")


def _pages(app, client, rng):
    """(name, urls) of each page timed: samples cycle through the urls."""
    with db.session_factory(app)() as session:
        uploads = session.scalar(select(func.count()).where(Event.event_type == "NewFileUpload"))
        newest = session.scalar(select(func.max(Event.id)))
        # An event page with attempts and a linked upload: a failed NewFileUpload of ours.
        troubled = session.scalars(select(HandlerState.event_id).where(
            HandlerState.state.in_(("failed", "dead")), HandlerState.event_id.in_(
                select(Event.id).join(Upload, Upload.file_id == Event.file_id)
                .where(Event.event_type == "NewFileUpload")))).all()
        rejections = session.scalars(select(Rejection.id)).all()
        upload_ids = session.scalars(select(Upload.id)).all()
    distinct = 500  # urls per page that has many: a row of its own for most samples

    def pick(values):
        return [rng.choice(values) for _ in range(distinct)]

    types = bench_queries.LISTED_TYPES
    deep = []
    for start in ["/admin/events", *(f"/admin/events?event_type={t}" for t in types)]:
        url = start
        for _ in range(20):
            response = client.get(url)
            if response.status_code != 200:
                raise SystemExit(f"GET {url} answered {response.status_code}")
            following = _parse(response).next
            if following is None:
                break  # fewer than 21 pages (a small run): the last one
            url = urljoin(url, following)
        deep.append(url)
    return [
        ("overview /admin/", ["/admin/"]),
        ("events, unfiltered", ["/admin/events"]),
        ("events ?event_type=", [f"/admin/events?event_type={t}" for t in types]),
        ("events ?source_context=", [f"/admin/events?source_context=order-{rng.randrange(uploads)}"
                                     for _ in range(distinct)]),
        ("events ?since=1h", ["/admin/events?since=1h"]),
        ("events, 21st page (cursor)", deep),
        ("event page", [f"/admin/events/{i}" for i in pick(troubled or [newest])]),
        ("rejections, unfiltered", ["/admin/rejections"]),
        ("rejections ?reason=", [f"/admin/rejections?reason={reason}"
                                 for reason in sorted(set(bench_queries.REASONS))]),
        ("rejection page", [f"/admin/rejections/{i}" for i in pick(rejections)]),
        ("uploads ?status=waiting", ["/admin/uploads?status=waiting"]),
        ("uploads ?status=failed", ["/admin/uploads?status=failed"]),
        ("upload page", [f"/admin/uploads/{i}" for i in pick(upload_ids)]),
        ("handlers ?state=failed", ["/admin/handlers?state=failed"]),
        ("handlers ?state=dead", ["/admin/handlers?state=dead"]),
        ("replay confirmation (capped)", ["/admin/replay?" + urlencode({"event_type": "NewFileUpload"})]),
        ("replays", ["/admin/replays"]),
    ]


def _measure(client, name, urls, options):
    times, budget = [], time.perf_counter() + options.page_seconds
    result = {"name": name, "urls": urls, "stopped": False, "wanted": options.samples}
    for i in range(options.warm_up + options.samples):
        url = urls[i % len(urls)]
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code == 500 and elapsed >= options.stop_after * 1000:
            result["stopped"] = True  # its statement was stopped (_stop_after): not worth repeating
            return result
        if response.status_code != 200:
            raise SystemExit(f"{name}: GET {url} answered {response.status_code}")
        if i >= options.warm_up:
            times.append(elapsed)
        if time.perf_counter() > budget and len(times) >= 2:
            break  # a page this slow has said what it had to say
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    result.update(p50=cuts[49], p95=cuts[94], max=max(times), samples=len(times))
    return result


def _print(backend, results):
    width = max(len(r["name"]) for r in results)
    print(f"\n{'page (' + backend + ')':<{width}}  {'p50':>7}  {'p95':>7}  {'max':>7}  "
          f"goal p95 < {GOAL_P95_MS} ms")
    for r in results:
        if r["stopped"]:
            print(f"{r['name']:<{width}}  {'-':>7}  {'-':>7}  {'-':>7}  MISSED (a statement stopped "
                  f"after the --stop-after limit)")
            continue
        verdict = "met" if r["p95"] < GOAL_P95_MS else "MISSED"
        fewer = f" (only {r['samples']} samples: --page-seconds)" if r["samples"] < r["wanted"] else ""
        print(f"{r['name']:<{width}}  {r['p50']:7.1f}  {r['p95']:7.1f}  {r['max']:7.1f}  {verdict}{fewer}")


def _was_stopped(record):
    error = record.exc_info[1] if record.exc_info else None
    return isinstance(error, DBAPIError) and any(
        words in str(error.orig) for words in ("interrupted", "statement timeout"))


def _stop_after(engine, seconds):
    """Stop any statement of `engine` running longer than `seconds`: one page scanning a million
    rows per row of another table must not hold the whole run for hours."""
    if engine.dialect.name == "postgresql":
        @sa_event.listens_for(engine, "connect")
        def _timeout(dbapi_connection, _record):
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = {int(seconds * 1000)}")
            dbapi_connection.commit()
        return
    deadline = [float("inf")]

    @sa_event.listens_for(engine, "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):
        deadline[0] = time.monotonic() + seconds

    @sa_event.listens_for(engine, "connect")
    def _watch(dbapi_connection, _record):
        # SQLite calls this every 100,000 virtual machine steps; true interrupts the statement.
        dbapi_connection.set_progress_handler(lambda: time.monotonic() > deadline[0], 100_000)


def _diagnose(app, client, result):
    """The statements one request of a missed page runs, slowest first, and the slowest's plan."""
    engine = db.engine(app)
    ran = []

    def record(conn, cursor, statement, parameters, context, executemany):
        ran.append((statement, parameters))

    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        client.get(result["urls"][0])
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    # Each run again on its own with every row fetched: SQLite computes rows as they are
    # fetched, after the cursor events, so timing the request's own executions undercounts.
    timed = []
    with engine.connect() as conn:
        for statement, parameters in ran:
            started = time.perf_counter()
            try:
                conn.exec_driver_sql(statement, parameters).all()
                stopped = False
            except DBAPIError:  # stopped by _stop_after
                conn.rollback()
                stopped = True
            timed.append(((time.perf_counter() - started) * 1000, statement, parameters, stopped))
        conn.rollback()
    if not timed:
        return f"\n{result['name']}: no SQL ran"
    timed.sort(key=lambda r: r[0], reverse=True)
    lines = [f"\n{result['name']} ({result['urls'][0]}): {len(timed)} statements, "
             f"{sum(r[0] for r in timed):.1f} ms run one by one; the slowest:"]
    for ms, statement, _, stopped in timed[:3]:
        lines.append(f"  {ms:8.1f} ms{' (stopped)' if stopped else ''}  {' '.join(statement.split())}")
    _, statement, parameters, stopped = timed[0]
    if engine.dialect.name == "sqlite":
        explain = "EXPLAIN QUERY PLAN "
    else:  # ANALYZE runs it: not a statement that had to be stopped. With the costs, which
        # decide JIT compiling, and the JIT summary (PostgreSQL prints it only with them).
        explain = "EXPLAIN " if stopped else "EXPLAIN (ANALYZE) "
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(explain + statement, parameters).all()
    lines.append("  plan:")
    lines += [f"    {row[-1] if engine.dialect.name == 'sqlite' else row[0]}" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
