"""The ledger extends to handlers: events = processed + failed + dead + pending + no_handler, in
`events stats`, /admin/api/v1/stats and /metrics (the backlog, read from the database)."""
import json
from datetime import timedelta

import pytest

from factories import deliver, upload
from receiver import admin
from receiver.handlers import Registry
from receiver.handlers.worker import Worker, process_event
from receiver.models import utcnow

FAST = {"RECEIVER_HANDLER_BACKOFF": 3600, "RECEIVER_HANDLER_MAX_ATTEMPTS": 2,
        "RECEIVER_HANDLER_TIMEOUT": 5}
TOKEN = "ledger-test-token-0123456789"


@pytest.fixture
def mixed(make_app):
    """Events in every state: processed, failed, dead, pending (unseen) and no_handler."""
    app = make_app(**FAST, RECEIVER_ADMIN_TOKENS=TOKEN)
    registry = Registry()

    @registry.on("NewFileUpload")
    def handler(event):
        if event.file_id != "f1":
            raise RuntimeError("no")

    ok, failing, dying = (upload(app, n, minutes=0).id for n in (1, 2, 3))
    deliver(app, b'{"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["f9"]}}')
    worker = Worker(app, registry)
    worker._sweep_all()
    while worker.run_once():
        pass
    process_event(app, dying, registry)  # its second attempt: out of attempts
    upload(app, 4, minutes=0)  # stored after the worker looked: pending
    return app


def test_stats_add_up_to_the_events_stored(mixed):
    client = mixed.test_client()
    stats = client.get(f"{admin.PREFIX}/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json
    assert stats["ledger"]["events"] == 5
    assert stats["handling"] == {"processed": 1, "failed": 1, "dead": 1, "pending": 1,
                                 "no_handler": 1, "running": 0}


def test_events_stats_prints_the_handlers_ledger(mixed):
    result = mixed.test_cli_runner().invoke(args=["events", "stats"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == ("events 5 = processed 1 + failed 1 + dead 1 + pending "
                                             "1 (0 running) + no handler 1")
    data = json.loads(mixed.test_cli_runner().invoke(args=["events", "stats", "--json"]).output)
    assert data["handling"]["dead"] == 1


def test_metrics_show_the_backlog_and_its_oldest_event(mixed):
    text = mixed.test_client().get("/metrics").text
    assert 'vod_handler_backlog{state="pending"} 1.0' in text
    assert 'vod_handler_backlog{state="failed"} 1.0' in text
    assert 'vod_handler_backlog{state="running"} 0.0' in text
    [age] = [float(line.split()[1]) for line in text.splitlines()
             if line.startswith("vod_handler_oldest_pending_seconds ")]
    # The uploads were received at T0 (factories): the oldest is that old, give or take the run.
    from factories import T0

    assert abs(age - (utcnow() - T0).total_seconds()) < timedelta(minutes=5).total_seconds()


def test_worker_serves_its_attempts_by_outcome_and_the_backlog(mixed):
    import urllib.request

    from receiver.metrics import serve_worker_metrics

    registry = Registry()
    registry.add("NewFileUpload", lambda event: None, name="ok")
    worker = Worker(mixed, registry)
    worker.counts["failed"] = 2  # as if it had run two failing attempts
    server, thread = serve_worker_metrics(worker, "127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics") as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        worker.close()
    assert 'vod_handler_attempts_total{outcome="failed"} 2.0' in text
    assert 'vod_handler_attempts_total{outcome="succeeded"} 0.0' in text
    assert 'vod_handler_backlog{state="pending"} 1.0' in text
