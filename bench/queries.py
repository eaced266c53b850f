"""Admin query benchmark: p50/p95 of the admin API's lookups over a large table of events.

    python -m bench.queries [--events 1000000] [--database-url URL] [--samples 300] [--keep]

Fills a database with realistic events (unique FileIds, SourceContexts `order-<n>`, several event
types, ~30% NewFileUpload, received over six months; plus 1% as many rejections), then times
lookups through the same query functions the admin API and the CLI call, each in a session of its
own as a request has, and prints p50/p95 per query with the plan the database chose for it.

Without --database-url the database is a temporary SQLite file. A PostgreSQL URL names a
database the benchmark creates and drops afterwards, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/vodr_bench_q; --keep leaves it (and the temporary
SQLite file) in place, and a run on a database that already holds events measures it without
refilling. A SQLite URL names a file that is kept.
"""
import argparse
import hashlib
import json
import os
import random
import re
import statistics
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from receiver import db, queries
from receiver.models import Event, Rejection

GOAL_P95_MS = 20
START = datetime(2026, 5, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=180)
FIRST_FILE_ID = 5285890784000000000
OTHER_TYPES = ["ProcedureStateChanged"] * 30 + ["FileDeleted"] * 10 + [
    "TranscodeComplete", "EditMediaComplete", "PullComplete", "ReviewAudioVideoComplete",
    "SplitMediaComplete", "ComposeMediaComplete", "RestoreMediaComplete"] * 4
LISTED_TYPES = ["NewFileUpload", "ProcedureStateChanged", "FileDeleted", "EditMediaComplete"]
REASONS = ["invalid_json"] * 5 + ["invalid_event"] * 3 + ["unknown_format", "body_too_large"]
UPLOAD_BODY = (
    '{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"%(file_id)s","MediaBasicInfo":'
    '{"Name":"clip %(n)d.mp4","Description":"","CreateTime":"%(time)s","UpdateTime":"%(time)s",'
    '"ExpireTime":"9999-12-31T23:59:59Z","ClassId":0,"ClassName":"Other","ClassPath":"Other",'
    '"CoverUrl":"","Type":"mp4","MediaUrl":"https://1256768367.vod2.myqcloud.com/a1b2c3d4/'
    '%(file_id)s/f0.mp4","TagSet":[],"StorageRegion":"ap-guangzhou","SourceInfo":{"SourceType":'
    '"%(source_type)s","SourceContext":"%(source_context)s"},"Vid":"%(file_id)s"},'
    '"ProcedureTaskId":"%(procedure)s","ReviewAudioVideoTaskId":""}}'
)
TASK_BODY = (
    '{"EventType":"%(event_type)s","%(event_type)sEvent":{"TaskId":"%(task_id)s","Status":"FINISH",'
    '"ErrCode":0,"Message":"SUCCESS","FileId":"%(file_id)s","FileName":"clip.mp4","MetaData":'
    '{"Size":%(size)d,"Container":"mov,mp4,m4a,3gp,3g2,mj2","Bitrate":1021028,"Height":720,'
    '"Width":1280,"Duration":59.99,"Rotate":0,"VideoStreamSet":[{"Bitrate":637174,"Height":720,'
    '"Width":1280,"Codec":"h264","Fps":25}],"AudioStreamSet":[{"Bitrate":383854,"SamplingRate":'
    '48000,"Codec":"aac"}]},"SessionContext":"","SessionId":"","TasksPriority":0}}'
)


def main(argv=None):
    """Fill (or reuse) the database, time each query, print the figures."""
    options = _parser().parse_args(argv)
    with _database(options.database_url, options.keep) as url:
        engine = db.make_engine(url)
        backend = engine.dialect.name
        stored = _count(engine)
        if stored:
            print(f"{backend}: reusing {stored:,} stored events")
        else:
            _fill(engine, options.events, options.seed)
        rng = random.Random(options.seed + 1)
        uploads = _uploads(engine)
        print(f"{backend}: {os.cpu_count()} CPUs, {_count(engine):,} events ({uploads:,} uploads), "
              f"{options.samples} lookups per query, times in ms")
        results = [_measure(engine, name, build, rng, uploads, options.samples)
                   for name, build in _lookups(engine)]
        _print(backend, results)
        started = time.perf_counter()
        with sessionmaker(engine)() as session:
            queries.stats(session)
        print(f"(stats over the whole table, not a goal: {(time.perf_counter() - started) * 1000:.0f} ms)")
        engine.dispose()


def _parser():
    parser = argparse.ArgumentParser(prog="python -m bench.queries", description=main.__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to store (default 1,000,000)")
    parser.add_argument("--database-url", help="PostgreSQL database to create (default: a temp SQLite file)")
    parser.add_argument("--samples", type=int, default=300, help="timed lookups per query")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    return parser


@contextmanager
def _database(url, keep):
    if url is None:
        folder = Path(tempfile.mkdtemp(prefix="vodr-bench-queries-"))
        url = f"sqlite:///{folder / 'bench.db'}"
        print(f"database: {url}")
        try:
            db.upgrade(url)
            yield url
        finally:
            if not keep:
                for path in folder.iterdir():
                    path.unlink()
                folder.rmdir()
        return
    url = make_url(url)
    name = url.database
    exists = False
    if url.get_backend_name() == "postgresql":
        server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    url_text = url.render_as_string(hide_password=False)
    print(f"database: {url.render_as_string()}{' (kept from an earlier run)' if exists else ''}")
    try:
        db.upgrade(url_text)
        yield url_text
    finally:
        if url.get_backend_name() == "postgresql":
            if not keep:
                with server.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()


def _count(engine):
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Event))


def _uploads(engine):
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).where(Event.event_type == "NewFileUpload"))


def _fill(engine, count, seed):
    """Store `count` events and count // 100 rejections, in bulk, without the app's per-row path."""
    started = time.perf_counter()
    backend = engine.dialect.name
    with engine.begin() as conn:
        # Secondary indexes are built once at the end: much faster than row by row.
        indexes = _secondary_indexes(conn)
        for name in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
    rng = random.Random(seed)
    rows = _event_rows(count, rng)
    rejections = _rejection_rows(count // 100, rng)
    if backend == "postgresql":
        _copy(engine, Event.__table__, rows)
        _copy(engine, Rejection.__table__, rejections)
    else:
        _insert(engine, Event.__table__, rows)
        _insert(engine, Rejection.__table__, rejections)
    print(f"filled {count:,} events in {time.perf_counter() - started:.0f} s; building indexes")
    with engine.begin() as conn:
        for definition in indexes.values():
            conn.execute(text(definition))
        # PostgreSQL's autovacuum would gather statistics soon after such a load; SQLite has
        # none unless ANALYZE runs, and is measured that way, as a fresh install would be.
        if backend == "postgresql":
            conn.execute(text("ANALYZE"))
    print(f"ready after {time.perf_counter() - started:.0f} s")


def _secondary_indexes(conn):
    if conn.dialect.name == "postgresql":
        found = conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('events', 'rejections') "
            "AND indexname LIKE 'ix\\_%'"))
    else:
        found = conn.execute(text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name IN ('events', 'rejections') AND name LIKE 'ix\\_%' ESCAPE '\\'"))
    return dict(found.all())


def _event_rows(count, rng):
    uploads = []  # (file_id, procedure_task_id) of each NewFileUpload so far
    for i in range(count):
        received_at = START + SPAN * (i / count) + timedelta(microseconds=rng.randrange(1_000_000))
        fmt = "v2" if rng.random() < 0.05 else "v3"
        row = {
            "received_at": received_at, "last_seen_at": received_at,
            "channel": "pull" if rng.random() < 0.1 else "push",
            "content_type": "application/json", "remote_addr": "203.0.113.%d" % rng.randrange(1, 255),
            "headers": {"Content-Type": "application/json", "User-Agent": "VOD-Callback"},
            "dedup_key": hashlib.sha256(b"%d" % i).hexdigest(), "format": fmt,
            "delivery_count": 2 if rng.random() < 0.03 else 1, "file_ids": None,
            "status": "FINISH", "size": rng.randrange(10**5, 10**9),
        }
        if rng.random() < 0.3 or not uploads:
            n = len(uploads)
            file_id = str(FIRST_FILE_ID + n)
            procedure = f"1256768367-procedure-{n:08x}" if n % 2 == 0 else None
            uploads.append(procedure)
            source_type = rng.choice(["Upload"] * 16 + ["Record"] * 3 + ["Pull"])
            row.update(event_type="NewFileUpload", data_key="FileUploadEvent", file_id=file_id,
                       source_type=source_type, source_context=f"order-{n}",
                       procedure_task_id=procedure, task_id=None, media_type="mp4",
                       media_name=f"clip {n}.mp4", storage_region="ap-guangzhou")
            body = UPLOAD_BODY % {"file_id": file_id, "n": n, "time": received_at.strftime(
                "%Y-%m-%dT%H:%M:%SZ"), "source_type": source_type, "source_context": f"order-{n}",
                "procedure": procedure or ""}
        else:
            n = rng.randrange(len(uploads))
            event_type = rng.choice(OTHER_TYPES)
            task_id = uploads[n] if event_type == "ProcedureStateChanged" and uploads[n] else (
                f"1256768367-{event_type}-{i:012x}")
            file_id = str(FIRST_FILE_ID + n)
            row.update(event_type=event_type, data_key=f"{event_type}Event", file_id=file_id,
                       task_id=task_id, source_type=None, source_context=None,
                       procedure_task_id=None, media_type=None, media_name=None, storage_region=None)
            body = TASK_BODY % {"event_type": event_type, "task_id": task_id, "file_id": file_id,
                                "size": row["size"]}
        body = body.encode()
        row.update(body=body, body_sha256=hashlib.sha256(body).hexdigest(), body_size=len(body))
        yield row


def _rejection_rows(count, rng):
    for i in range(count):
        received_at = START + SPAN * (i / max(count, 1)) + timedelta(microseconds=rng.randrange(10**6))
        body = b'{"EventType": "NewFileUpload", "FileUploadEvent": "%d"}' % i
        yield {"received_at": received_at, "channel": "push", "body": body,
               "body_sha256": hashlib.sha256(body).hexdigest(), "body_size": len(body),
               "content_type": "application/json", "remote_addr": "198.51.100.7",
               "headers": {"Content-Type": "application/json"}, "reason": rng.choice(REASONS),
               "status_code": 422, "message": "The FileUploadEvent data must be an object.",
               "details": None, "method": "POST", "path": "/callbacks/vod", "body_truncated": False}


def _insert(engine, table, rows, batch=20_000):
    # SQLite: executemany through SQLAlchemy (so values are stored exactly as the app stores
    # them), with durability relaxed for the load only.
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        conn.exec_driver_sql("PRAGMA cache_size=-262144")
        chunk = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == batch:
                conn.execute(insert(table), chunk)
                chunk = []
        if chunk:
            conn.execute(insert(table), chunk)
        conn.commit()


def _copy(engine, table, rows):
    # PostgreSQL: COPY, the fastest way in; JSON columns as their text.
    columns = [c.name for c in table.columns if c.name != "id"]
    json_columns = {c.name for c in table.columns if c.type.__class__.__name__ == "JSON"}
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(row.get(c)) if c in json_columns and row.get(c) is not None
                                else row.get(c) for c in columns])
        raw.commit()
    finally:
        raw.close()


def _lookups(engine):
    """(name, build) pairs: build(rng, uploads) -> (query function, filters, limit, cursor)."""
    with engine.connect() as conn:
        newest, oldest = conn.execute(select(func.max(Event.id), func.min(Event.id))).one()

    def by_file_id(rng, uploads):
        return queries.list_events, {"file_id": str(FIRST_FILE_ID + rng.randrange(uploads))}, 50, None

    def by_source_context(rng, uploads):
        return queries.list_events, {"source_context": f"order-{rng.randrange(uploads)}"}, 50, None

    def by_procedure_task_id(rng, uploads):
        n = rng.randrange(uploads // 2) * 2
        return queries.list_events, {"procedure_task_id": f"1256768367-procedure-{n:08x}"}, 50, None

    def by_file_id_and_type(rng, uploads):
        return queries.list_events, {"file_id": str(FIRST_FILE_ID + rng.randrange(uploads)),
                                     "event_type": rng.choice(LISTED_TYPES)}, 50, None

    def by_source_context_prefix(rng, uploads):
        return queries.list_events, {"source_context_prefix": f"order-{rng.randrange(uploads // 10)}9"}, 50, None

    def type_and_week(rng, uploads):
        after = START + timedelta(days=rng.uniform(0, SPAN.days - 7))
        return queries.list_events, {"event_type": rng.choice(LISTED_TYPES), "received_after": after,
                                     "received_before": after + timedelta(days=7)}, 50, None

    def deep_page(rng, uploads):
        # A page far into a type + time-range listing: the cursor of a random event of that type.
        event_type = rng.choice(LISTED_TYPES)
        with engine.connect() as conn:
            row = conn.execute(select(Event.received_at, Event.id).where(
                Event.event_type == event_type, Event.id >= rng.randint(oldest, newest)
            ).order_by(Event.id).limit(1)).one()
        return queries.list_events, {"event_type": event_type,
                                     "received_before": START + SPAN}, 50, queries.encode_cursor(*row)

    def rejections_by_reason(rng, uploads):
        return queries.list_rejections, {"reason": rng.choice(REASONS)}, 50, None

    return [("by file_id", by_file_id), ("by source_context", by_source_context),
            ("by procedure_task_id", by_procedure_task_id),
            ("type + 7-day range, first page", type_and_week), ("type + range, deep page by cursor", deep_page),
            ("file_id + event_type (extra)", by_file_id_and_type),
            ("source_context prefix (extra)", by_source_context_prefix),
            ("rejections by reason (extra)", rejections_by_reason)]


def _measure(engine, name, build, rng, uploads, samples):
    factory = sessionmaker(engine)
    calls = [build(rng, uploads) for _ in range(samples + 20)]
    times, found = [], 0
    for i, (query, filters, limit, cursor) in enumerate(calls):
        started = time.perf_counter()
        with factory() as session:
            page = query(session, filters, limit, cursor)
        elapsed = (time.perf_counter() - started) * 1000
        if i >= 20:  # the first ones warm the connection pool and the caches
            times.append(elapsed)
            found += len(page.items)
    query, filters, limit, cursor = calls[0]
    cuts = statistics.quantiles(times, n=100)
    return {"name": name, "p50": cuts[49], "p95": cuts[94], "max": max(times),
            "rows": found / len(times), "plan": _plan(engine, query, filters, limit, cursor)}


def _plan(engine, query, filters, limit, cursor):
    """The plan the database chooses for this query, from the statement the query runs."""
    captured = []

    def capture(conn, cursor_, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with sessionmaker(engine)() as session:
            query(session, filters, limit, cursor)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = captured[-1]
    explain = "EXPLAIN " if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(explain + statement, parameters).all()
    if engine.dialect.name == "sqlite":
        return "; ".join(row[-1] for row in rows)
    # PostgreSQL: the scans and sorts, without costs.
    lines = [re.sub(r"\s*\(cost=[^)]*\)", "", row[0]).strip(" ->") for row in rows]
    return "; ".join(line for line in lines if "Scan" in line or line == "Sort")


def _print(backend, results):
    width = max(len(r["name"]) for r in results)
    print(f"\n{'query':<{width}}  {'p50':>7}  {'p95':>7}  {'max':>7}  {'rows':>5}  goal p95 < {GOAL_P95_MS} ms")
    for r in results:
        verdict = "" if "extra" in r["name"] else ("ok" if r["p95"] < GOAL_P95_MS else "MISSED")
        print(f"{r['name']:<{width}}  {r['p50']:7.2f}  {r['p95']:7.2f}  {r['max']:7.2f}  "
              f"{r['rows']:5.1f}  {verdict}")
    print(f"\nplans ({backend}):")
    for r in results:
        print(f"  {r['name']}: {r['plan']}")


if __name__ == "__main__":
    main()
