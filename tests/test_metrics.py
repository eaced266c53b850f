import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from receiver import create_app
from receiver.events import ParsedEvent
from receiver.metrics import MAX_LABEL_VALUES, OTHER, Metrics

from conftest import SAMPLES

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/receiver"


def scrape(text):
    """Every sample of a Prometheus text exposition as {(name, labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def upload(file_id, **extra):
    document = json.loads((SAMPLES / "v3-push-newfileupload.json").read_bytes())
    document["FileUploadEvent"]["FileId"] = file_id
    document["FileUploadEvent"].update(extra)
    return json.dumps(document)


def test_metrics_count_callbacks_by_outcome_type_format_and_reason(client):
    client.post("/callbacks/vod", data=upload("1001"))
    client.post("/callbacks/vod", data=upload("1001"))
    client.post("/callbacks/vod", data=(SAMPLES / "v2-newfileupload.json").read_bytes())
    client.post("/callbacks/vod", data=(SAMPLES / "v3-push-filedeleted.json").read_bytes())
    client.post("/callbacks/vod", data=b"{not json")
    client.post("/callbacks/vod", data=b"[]")
    client.get("/callbacks/vod")
    client.post("/callbacks/vdo", data=upload("1002"))

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    samples = scrape(response.text)
    assert value(samples, "vod_callbacks_total", outcome="stored", reason="") == 3
    assert value(samples, "vod_callbacks_total", outcome="duplicate", reason="") == 1
    assert value(samples, "vod_callbacks_total", outcome="rejected", reason="invalid_json") == 1
    assert value(samples, "vod_callbacks_total", outcome="rejected", reason="not_an_object") == 1
    assert value(samples, "vod_callbacks_total", outcome="rejected", reason="method_not_allowed") == 1
    assert value(samples, "vod_callbacks_total", outcome="rejected", reason="not_found") == 1
    assert value(samples, "vod_events_total", event_type="NewFileUpload", format="v3") == 2
    assert value(samples, "vod_events_total", event_type="NewFileUpload", format="v2") == 1
    assert value(samples, "vod_events_total", event_type="FileDeleted", format="v3") == 1
    assert value(samples, "vod_ingest_seconds_count") == 8
    assert value(samples, "vod_spool_depth") == 0


def test_unknown_event_types_and_fields_are_counted(client):
    client.post("/callbacks/vod", data=upload("2001", Surprise=1))
    client.post("/callbacks/vod", data=upload("2002", Surprise=2))
    client.post("/callbacks/vod", data=json.dumps(
        {"EventType": "TeleportComplete", "TeleportCompleteEvent": {"TaskId": "t-1", "Beam": 1}}))

    samples = scrape(client.get("/metrics").text)

    assert value(samples, "vod_unknown_fields_total", event_type="NewFileUpload",
                 field="Surprise") == 2
    assert value(samples, "vod_unknown_event_types_total", event_type="TeleportComplete") == 1
    assert value(samples, "vod_unknown_fields_total", event_type="TeleportComplete",
                 field="Beam") == 1
    assert value(samples, "vod_events_total", event_type="TeleportComplete", format="v3") == 1


def test_parse_warnings_are_counted_by_event_type_and_field(client):
    client.post("/callbacks/vod", data=upload("5001", MetaData=[]))
    client.post("/callbacks/vod", data=upload("5002", MetaData=[], ProcedureTaskId={"a": 1}))
    client.post("/callbacks/vod", data=json.dumps(
        {"version": "4.1", "eventType": "NewFileUpload", "data": {"fileId": "5003"}}))

    samples = scrape(client.get("/metrics").text)

    assert value(samples, "vod_parse_warnings_total", event_type="NewFileUpload",
                 field="FileUploadEvent.MetaData") == 2
    assert value(samples, "vod_parse_warnings_total", event_type="NewFileUpload",
                 field="FileUploadEvent.ProcedureTaskId") == 1
    assert value(samples, "vod_parse_warnings_total", event_type="NewFileUpload", field="version") == 1
    assert value(samples, "vod_callbacks_total", outcome="stored", reason="") == 3


def test_parse_warning_fields_are_bounded_apart_from_drift():
    metrics = Metrics(CollectorRegistry())
    for i in range(MAX_LABEL_VALUES + 5):
        event = ParsedEvent("v3", "Invented", "Data", str(i), unknown_fields=(f"New{i}",),
                            warnings=[{"field": f"Data{i}.TaskId", "problem": "p", "stored": "nothing"}])
        metrics.callback(event, "stored", 0.001)

    seen = {s.labels["field"]: s.value for s in metrics.parse_warnings.collect()[0].samples
            if s.name.endswith("_total")}

    # A budget of their own: sharing the unknown fields' would have left room for 25.
    assert len(seen) == MAX_LABEL_VALUES + 1 and seen[OTHER] == 5


def test_apps_count_on_their_own(app, tmp_path):
    other = create_app({"RECEIVER_DATABASE_URL": app.config["RECEIVER_DATABASE_URL"],
                        "RECEIVER_SPOOL_DIR": str(tmp_path / "other")})
    app.test_client().post("/callbacks/vod", data=upload("3001"))

    samples = scrape(other.test_client().get("/metrics").text)

    assert value(samples, "vod_callbacks_total", outcome="stored", reason="") == 0


def test_spooled_callbacks_and_spool_depth_are_counted(tmp_path):
    app = create_app({"RECEIVER_DATABASE_URL": UNREACHABLE,
                      "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"),
                      "RECEIVER_SPOOL_DRAIN_INTERVAL": 0})
    client = app.test_client()

    assert client.post("/callbacks/vod", data=upload("4001")).status_code == 200
    assert client.post("/callbacks/vod", data=b"{").status_code == 400

    samples = scrape(client.get("/metrics").text)
    assert value(samples, "vod_callbacks_total", outcome="spooled", reason="") == 1
    assert value(samples, "vod_callbacks_total", outcome="spooled", reason="invalid_json") == 1
    assert value(samples, "vod_spool_depth") == 2


def test_labels_taken_from_bodies_are_bounded():
    metrics = Metrics(CollectorRegistry())
    for i in range(MAX_LABEL_VALUES + 10):
        metrics.callback(ParsedEvent("v3", f"Invented{i}", None, str(i)), "stored", 0.001)
    metrics.callback(ParsedEvent("v3", "no spaces allowed", None, "x"), "stored", 0.001)

    seen = {s.labels["event_type"]: s.value for s in metrics.unknown_event_types.collect()[0].samples
            if s.name.endswith("_total")}

    assert len(seen) == MAX_LABEL_VALUES + 1
    assert seen[OTHER] == 11
    assert sum(seen.values()) == MAX_LABEL_VALUES + 11


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: the gunicorn under test needs no TCP port."""

    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.socket_path))


def request(socket_path, method, path, body=None):
    connection = UnixConnection(socket_path)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def gunicorn(app, database_url, tmp_path):
    """The receiver under gunicorn with two workers and the shipped configuration."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")
    socket_path = tmp_path / "gunicorn.sock"
    env = {**os.environ, "RECEIVER_DATABASE_URL": database_url,
           "RECEIVER_SPOOL_DIR": str(tmp_path / "spool"), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with open(tmp_path / "gunicorn.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:receiver.gunicorn_conf",
             "--bind", f"unix:{socket_path}", "--workers", "2", "receiver:create_app()"],
            cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(socket_path, "GET", "/livez")[0] == 200:
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "gunicorn.log").read_text()) from None
                time.sleep(0.05)
        yield socket_path, metrics_dir
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_metrics_are_summed_over_gunicorn_workers(gunicorn):
    socket_path, metrics_dir = gunicorn
    assert not (metrics_dir / "counter_1.db").exists()  # cleaned when the master started

    # Post until both workers have served callbacks (each has then written its own file), so
    # the sum below really spans processes.
    sent = 0
    while len(list(metrics_dir.glob("counter_*.db"))) < 2 and sent < 200:
        assert request(socket_path, "POST", "/callbacks/vod", upload(f"5{sent:04}"))[0] == 200
        sent += 1
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2

    for _ in range(4):
        samples = scrape(request(socket_path, "GET", "/metrics")[1])
        assert value(samples, "vod_callbacks_total", outcome="stored", reason="") == sent
        assert value(samples, "vod_ingest_seconds_count") == sent
