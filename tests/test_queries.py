"""Query logic shared by the admin API and the CLI, against both databases."""
from datetime import timedelta

import pytest
from factories import T0, deliver, upload
from sqlalchemy import event

from conftest import SAMPLES
from receiver import queries


def _all_pages(session, limit, **filters):
    pages, cursor = [], None
    while True:
        page = queries.list_events(session, filters, limit, cursor)
        pages.append([row.id for row in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_pages_list_every_event_once_newest_first_when_many_share_an_instant(app, session):
    # 3 instants x 7 events: pages must break inside a run of equal received_at.
    ids = {upload(app, n, minutes=n % 3).id: n % 3 for n in range(21)}
    pages = _all_pages(session, limit=4)
    listed = [i for page in pages for i in page]
    assert listed == sorted(ids, key=lambda i: (ids[i], i), reverse=True)
    assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 1]


@pytest.mark.parametrize("window", [{}, {"received_after": T0 + timedelta(minutes=1)},
                                    {"received_before": T0 + timedelta(minutes=3)},
                                    {"received_after": T0, "received_before": T0 + timedelta(minutes=2)}])
def test_pages_within_a_time_range_list_exactly_the_rows_in_it(app, session, window):
    for n in range(12):
        upload(app, n, minutes=n % 4)
    listed = [i for page in _all_pages(session, limit=2, **window) for i in page]
    assert listed == [row.id for row in queries.list_events(session, window, limit=500).items]
    low, high = window.get("received_after", T0), window.get("received_before", T0 + timedelta(hours=1))
    assert len(listed) == sum(1 for n in range(12) if low <= T0 + timedelta(minutes=n % 4) < high)


def test_a_cursor_above_received_before_starts_at_the_range(app, session):
    for n in range(6):
        upload(app, n)
    cursor = queries.encode_cursor(T0 + timedelta(hours=1), 10**6)
    page = queries.list_events(session, {"received_before": T0 + timedelta(minutes=3)}, cursor=cursor)
    assert [row.file_id for row in page.items] == ["f2", "f1", "f0"]


def test_next_page_is_unaffected_by_events_stored_meanwhile(app, session):
    for n in range(6):
        upload(app, n)
    first = queries.list_events(session, limit=3)
    upload(app, 100)  # newer than everything
    second = queries.list_events(session, limit=3, cursor=first.next_cursor)
    assert [row.file_id for row in first.items + second.items] == [f"f{n}" for n in range(5, -1, -1)]
    assert second.next_cursor is None


def test_last_full_page_has_no_next_cursor(app, session):
    for n in range(4):
        upload(app, n)
    assert queries.list_events(session, limit=4).next_cursor is None
    assert queries.list_events(session, limit=3).next_cursor is not None


@pytest.mark.parametrize("filters, expected", [
    ({"file_id": "f2"}, ["f2"]),
    ({"source_context": "order-1"}, ["f1"]),
    ({"source_context_prefix": "order-1"}, ["f12", "f11", "f10", "f1"]),
    ({"source_context_prefix": "order-1", "received_before": T0 + timedelta(minutes=11)}, ["f10", "f1"]),
    ({"procedure_task_id": "proc-3"}, ["f3"]),
    ({"source_type": "Record"}, ["f4"]),
    ({"event_type": "NewFileUpload", "received_after": T0 + timedelta(minutes=11)}, ["f12", "f11"]),
    ({"event_type": "FileDeleted"}, []),
    ({"format": "v3", "channel": "push", "file_id": "f0"}, ["f0"]),
    ({"format": "v2"}, []),
    ({"channel": "pull"}, []),
    ({"received_after": T0 + timedelta(minutes=2), "received_before": T0 + timedelta(minutes=4)},
     ["f3", "f2"]),
])
def test_filters_select_matching_events(app, session, filters, expected):
    for n in (0, 1, 2, 10, 11, 12):
        upload(app, n)
    upload(app, 3, procedure_task_id="proc-3")
    upload(app, 4, source_type="Record")
    assert [row.file_id for row in queries.list_events(session, filters).items] == expected


@pytest.mark.parametrize("prefix, expected", [
    ("order-1", {"order-1", "order-1é", "order-10", "order-1\U0010ffff"}),
    ("order-1é", {"order-1é"}),
    ("ORDER", {"ORDER-1"}),
    ("a%_", {"a%_b"}),  # LIKE wildcards are plain characters here
    ("a", {"a%_b", "axb"}),
    ("\U0010ffff", {"\U0010ffffz"}),
    ("\ud7ff", {"\ud7ffa"}),
])
def test_source_context_prefix_matches_exactly_the_strings_starting_with_it(app, session, prefix, expected):
    contexts = ["order-1", "order-1é", "order-10", "order-1\U0010ffff", "order-2", "order1", "ORDER-1",
                "a%_b", "axb", "order-", "\U0010ffffz", "\ud7ffa", "\ue000"]
    for n, context in enumerate(contexts):
        upload(app, n, source_context=context)
    found = queries.list_events(session, {"source_context_prefix": prefix}, limit=100).items
    assert {row.source_context for row in found} == expected


def test_other_formats_and_channels_are_filtered(app, session):
    deliver(app, (SAMPLES / "v2-newfileupload.json").read_bytes(), channel="pull")
    deliver(app, (SAMPLES / "v3-push-filedeleted.json").read_bytes(), channel="replay")
    assert [r.format for r in queries.list_events(session, {"format": "v2"}).items] == ["v2"]
    assert [r.event_type for r in queries.list_events(session, {"channel": "replay"}).items] == ["FileDeleted"]
    assert [r.channel for r in queries.list_events(session, {"source_type": "Record"}).items] == ["pull"]


def test_rejections_filter_by_reason_and_time(app, session):
    deliver(app, b"not json", received_at=T0)
    deliver(app, b"[]", received_at=T0 + timedelta(minutes=1))
    deliver(app, b"{}", received_at=T0 + timedelta(minutes=2))
    assert [r.reason for r in queries.list_rejections(session).items] == [
        "unknown_format", "not_an_object", "invalid_json"]
    assert [r.reason for r in queries.list_rejections(session, {"reason": "invalid_json"}).items] == [
        "invalid_json"]
    later = {"received_after": T0 + timedelta(minutes=1)}
    assert len(queries.list_rejections(session, later).items) == 2
    page = queries.list_rejections(session, limit=2)
    rest = queries.list_rejections(session, limit=2, cursor=page.next_cursor)
    assert [r.reason for r in rest.items] == ["invalid_json"] and rest.next_cursor is None


def test_stats_count_by_type_day_and_reason_and_balance_the_ledger(app, session):
    upload(app, 1)
    upload(app, 1)  # a duplicate delivery
    upload(app, 1)
    upload(app, 2, minutes=24 * 60)
    deliver(app, (SAMPLES / "v3-push-filedeleted.json").read_bytes())
    deliver(app, b"nope")
    result = queries.stats(session)
    assert result["ledger"] == {"deliveries": 6, "events": 3, "duplicates": 2, "rejections": 1,
                                "resolved": 0}
    assert result["by_event_type"] == [
        {"event_type": "FileDeleted", "events": 1, "duplicates": 0},
        {"event_type": "NewFileUpload", "events": 2, "duplicates": 2},
    ]
    assert result["by_day"] == [
        {"day": "2026-11-02", "events": 1, "duplicates": 0, "rejections": 0},
        {"day": "2026-11-01", "events": 2, "duplicates": 2, "rejections": 1},
    ]
    assert result["rejections_by_reason"] == [{"reason": "invalid_json", "rejections": 1}]


def test_get_returns_none_for_unknown_and_out_of_range_ids(app, session):
    stored = upload(app, 1)
    assert queries.get_event(session, stored.id).file_id == "f1"
    for missing in (stored.id + 1, 0, -1, 2**63, 10**30):
        assert queries.get_event(session, missing) is None
        assert queries.get_rejection(session, missing) is None


@pytest.mark.parametrize("prefix, end", [
    ("a", "b"), ("order-1", "order-2"), ("x\U0010ffff", "y"), ("\U0010ffff\U0010ffff", None),
    ("\ud7ff", "\ue000"),
])
def test_prefix_end_is_the_least_string_above_the_prefix(prefix, end):
    assert queries.prefix_end(prefix) == end


def test_cursor_round_trips():
    assert queries.decode_cursor(queries.encode_cursor(T0, 42)) == (T0, 42)


@pytest.mark.parametrize("cursor", [
    "", "not base64!", "bm90IGpzb24", queries.encode_cursor(T0, 1)[:-3],
    "eyJyIjogIjIwMjYtMTEtMDFUMTI6MDA6MDAiLCAiaSI6IDF9",  # naive time
    "eyJyIjogIjIwMjYtMTEtMDFUMTI6MDA6MDArMDA6MDAiLCAiaSI6IDEwMDAwMDAwMDAwMDAwMDAwMDAwMDB9",  # huge id
    "eyJyIjogMSwgImkiOiAxfQ", "W10",
])
def test_foreign_cursors_are_refused(cursor):
    with pytest.raises(queries.InvalidCursor):
        queries.decode_cursor(cursor)


@pytest.mark.parametrize("filters, index", [
    ({"file_id": "f1", "event_type": "NewFileUpload"}, "ix_events_file_id"),
    ({"source_context": "order-1", "event_type": "NewFileUpload", "format": "v3"},
     "ix_events_source_context"),
    ({"source_context_prefix": "order-1", "event_type": "NewFileUpload"}, "ix_events_source_context"),
    ({"procedure_task_id": "p", "event_type": "NewFileUpload", "channel": "push"},
     "ix_events_procedure_task_id"),
    ({"task_id": "t", "event_type": "ProcedureStateChanged"}, "ix_events_task_id"),
    ({"event_type": "NewFileUpload", "received_after": T0}, "ix_events_event_type_received_at_id"),
])
def test_sqlite_looks_up_by_the_key_index_even_with_an_event_type(app, session, filters, index):
    # SQLite plans without statistics, the same on an empty table as on a large one; PostgreSQL
    # plans by statistics, so its plans are checked at scale by bench/queries.py.
    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("PostgreSQL plans by table statistics: see bench/queries.py")
    statements = []
    engine = session.get_bind()

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        queries.list_events(session, filters, cursor=queries.encode_cursor(T0, 5))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = statements[-1]
    plan = session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    assert f"USING INDEX {index} " in plan[0][-1]
