"""Prometheus metrics: what the receiver counts, and `GET /metrics` to scrape them.

Under gunicorn every worker is a process with counters of its own; prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, prepared by gunicorn_conf) keeps them in files that
a scrape sums, whichever worker answers it. Without it (tests, `flask run`) each app has a
registry of its own, so apps created side by side never share counts.
"""
import os
import re

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from . import db, spool
from .events import DATA_KEYS, Refusal

bp = Blueprint("metrics", __name__)

# VOD answers within its 5 s timeout or retries: the buckets resolve the fast path finely and
# show how close the slow tail comes to that limit.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5)
# Labels that come from request bodies are bounded: a sender inventing a type per request must
# not create a time series per request.
LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}\Z")
MAX_LABEL_VALUES = 50
OTHER = "other"


class Metrics:
    """The receiver's counters, registered on `registry`."""

    def __init__(self, registry):
        self.callbacks = Counter(
            "vod_callbacks", "Callbacks received, by outcome (stored, duplicate, rejected, "
            "spooled) and, for refused bodies, the reason.", ["outcome", "reason"],
            registry=registry)
        self.events = Counter("vod_events", "Events received (stored, duplicate or spooled), "
                              "by event type and format (v3, v2).", ["event_type", "format"],
                              registry=registry)
        self.ingest_seconds = Histogram("vod_ingest_seconds", "Time to store (or spool) a "
                                        "callback and answer it.", buckets=LATENCY_BUCKETS,
                                        registry=registry)
        self.unknown_event_types = Counter(
            "vod_unknown_event_types", "Events whose type the receiver does not know.",
            ["event_type"], registry=registry)
        self.unknown_fields = Counter(
            "vod_unknown_fields", "Fields in v3 event data that the event type is not known "
            "to carry (a dotted path).", ["event_type", "field"], registry=registry)
        self.parse_warnings = Counter(
            "vod_parse_warnings", "Fields of stored events that VOD sent in a shape the receiver "
            "did not expect and left out or clipped (a dotted body path).", ["event_type", "field"],
            registry=registry)
        # Warned fields have a budget of their own: a flood of new fields must not hide them.
        self._seen = {"event_type": set(), "field": set(), "warning_field": set()}
        self._children = {}  # (metric, label values) -> the labelled child, looked up once

    def _child(self, metric, *values):
        key = (metric, values)
        child = self._children.get(key)
        if child is None:  # label values are bounded (see _bounded), and so is this dict
            child = self._children[key] = metric.labels(*values)
        return child

    def callback(self, verdict, outcome, seconds):
        """Count one callback: its outcome, its event, its latency, drift and parse warnings."""
        self.ingest_seconds.observe(seconds)
        if isinstance(verdict, Refusal):
            self._child(self.callbacks, outcome, verdict.reason).inc()
            return
        self._child(self.callbacks, outcome, "").inc()
        event_type = verdict.event_type
        if event_type not in DATA_KEYS:
            event_type = self._bounded("event_type", event_type)
            self._child(self.unknown_event_types, event_type).inc()
        self._child(self.events, event_type, verdict.format).inc()
        for name in verdict.unknown_fields:
            self._child(self.unknown_fields, event_type, self._bounded("field", name)).inc()
        for warning in verdict.warnings:
            field = self._bounded("warning_field", warning["field"])
            self._child(self.parse_warnings, event_type, field).inc()

    def _bounded(self, kind, value):
        seen = self._seen[kind]
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES or not LABEL.match(value):
            return OTHER
        seen.add(value)
        return value


class SpoolDepth:
    """Deliveries waiting in the spool, the oldest's age and the quarantined files, read from
    the folder at scrape time.

    File counts, not per-process gauges: the spool is shared by every worker.
    """

    def __init__(self, spool_dir):
        self.spool_dir = spool_dir

    def collect(self):
        """The spool's depth, oldest age and quarantined count now."""
        state = spool.status(self.spool_dir)
        yield GaugeMetricFamily("vod_spool_depth", "Deliveries waiting in the spool for the "
                                "database.", value=state["depth"])
        yield GaugeMetricFamily("vod_spool_oldest_age_seconds", "Age of the oldest delivery "
                                "waiting in the spool (0 when empty).",
                                value=state["oldest_age_seconds"] or 0)
        yield GaugeMetricFamily("vod_spool_quarantined", "Spool files that could not be read "
                                "or stored, moved to its quarantine folder.",
                                value=state["quarantined"])


class HandlerBacklog:
    """The handlers' backlog, read from the database at scrape time.

    The database, not a worker's memory, knows the backlog whatever the number of workers (or
    none running), so the receiver's own /metrics shows it; a scrape costs two index lookups
    while the workers keep up (handlers.worker.backlog).
    """

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        """Backlog by state and the age of its oldest event; nothing while the database is down."""
        from .handlers.worker import backlog

        try:
            with self.engine.connect() as connection:
                counts, age = backlog(connection)
        except SQLAlchemyError:
            return  # /readyz says the database is down; the scrape still answers
        family = GaugeMetricFamily("vod_handler_backlog", "Events the application's handlers "
                                   "have still to settle, by state (pending includes events the "
                                   "worker has not seen yet).", labels=["state"])
        for state, count in sorted(counts.items()):
            family.add_metric([state], count)
        yield family
        yield GaugeMetricFamily("vod_handler_oldest_pending_seconds", "Age of the oldest event "
                                "in the backlog (0 when there is none).", value=age or 0.0)


class WorkerAttempts:
    """A worker's handler attempts by outcome, since it started (served by `vod-receiver work`)."""

    def __init__(self, worker):
        self.worker = worker

    def collect(self):
        """The worker's counts."""
        family = CounterMetricFamily("vod_handler_attempts", "Handler attempts by outcome "
                                     "(succeeded, failed, timeout, abandoned).", labels=["outcome"])
        for outcome, count in self.worker.counts.items():
            family.add_metric([outcome], count)
        yield family


def serve_worker_metrics(worker, bind):
    """Serve a worker's attempts and the backlog at http://`bind`/metrics (host:port)."""
    from prometheus_client import start_http_server

    host, _, port = bind.rpartition(":")
    registry = CollectorRegistry()
    registry.register(WorkerAttempts(worker))
    registry.register(HandlerBacklog(worker.engine))
    return start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)


def init_app(app):
    """Give `app` its metrics and the /metrics endpoint."""
    if app.config["PROMETHEUS_MULTIPROC_DIR"]:
        # Metrics write their files as they are created, before gunicorn's hook could make it.
        os.makedirs(app.config["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    registry = CollectorRegistry()
    app.extensions["receiver.metrics"] = Metrics(registry)
    if app.config["PROMETHEUS_MULTIPROC_DIR"]:
        # The values live in the shared folder; each scrape sums them afresh.
        registry = None
    else:
        registry.register(SpoolDepth(app.config["RECEIVER_SPOOL_DIR"]))
        registry.register(HandlerBacklog(db.engine(app)))
    app.extensions["receiver.metrics.registry"] = registry
    app.register_blueprint(bp)


def metrics(app=None):
    """The app's Metrics."""
    return (app or current_app).extensions["receiver.metrics"]


@bp.get("/metrics")
def scrape():
    """The receiver's metrics in the Prometheus text format."""
    registry = current_app.extensions["receiver.metrics.registry"]
    if registry is None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(SpoolDepth(current_app.config["RECEIVER_SPOOL_DIR"]))
        registry.register(HandlerBacklog(db.engine()))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
