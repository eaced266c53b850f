"""The reliable-callback consumer: PullEvents -> store the batch -> ConfirmEvents -> again.

VOD keeps a pulled event until its EventHandle is confirmed, and hands it out again 30 s after
the pull otherwise (vod-spec §3): at-least-once. So a batch is confirmed only once every event
of it is durable — committed, or in the spool — and a crash in between means a redelivery,
which the dedup key turns into a counted duplicate. Each event goes through the same front
door as a push (ingest.ingest_many, channel "pull"), all of a batch in one transaction.

The `RECEIVER_PULL_TEST_KILL_AT` environment variable is read by a test hook only: set to
"after-commit", the process SIGKILLs itself between the commit and ConfirmEvents, as a crash
there would (tests/vod/test_vod_pull.py). Nothing else reads it; leave it unset.
"""
import json
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from tenacity import (Retrying, retry_if_exception, stop_after_delay, stop_never,
                      wait_random_exponential)
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from .. import metrics as receiver_metrics
from .. import spool
from ..ingest import ingest_many
from ..models import utcnow
from ..store import Delivery
from .client import vod_retryable

log = logging.getLogger(__name__)

MAX_EVENTS = 16  # PullEvents hands out at most 16, and ConfirmEvents takes at most 16 handles
# VOD holds a PullEvents up to 5 s when nothing is queued and recommends a 10 s client timeout.
PULL_TIMEOUT = 10
# A handle is valid 30 s after the pull: retrying a confirmation longer is pointless, and a
# margin leaves room for the last attempt's own round trip.
CONFIRM_RETRY_SECONDS = 25
KILL_AT = "RECEIVER_PULL_TEST_KILL_AT"


class ConsumerError(Exception):
    """The consumer cannot run (credentials, SubAppId, endpoint); the message is one line."""


class _Stopped(Exception):
    """Stop was asked for before the next PullEvents was sent."""


class PullMetrics:
    """The consumer's counters, on a registry of its own (served by --metrics-port)."""

    def __init__(self, registry=None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.batches = Counter("vod_pull_batches", "PullEvents calls that returned events.",
                               registry=self.registry)
        self.empty_pulls = Counter("vod_pull_empty", "PullEvents calls that returned no event "
                                   "(the long poll ran out).", registry=self.registry)
        self.events = Counter("vod_pull_events", "Pulled events, by outcome (stored, duplicate, "
                              "rejected, spooled).", ["outcome"], registry=self.registry)
        self.confirmed = Counter("vod_pull_confirmed", "Event handles confirmed.",
                                 registry=self.registry)
        self.confirm_failures = Counter(
            "vod_pull_confirm_failures", "Event handles not confirmed, by reason (expired: VOD "
            "will deliver the event again; or the error code).", ["reason"], registry=self.registry)
        self.pull_errors = Counter("vod_pull_errors", "Failed PullEvents calls, by error code "
                                   "(each retried with backoff).", ["code"], registry=self.registry)
        # Per event type and format, as the push path counts them (vod_events, vod_callbacks).
        self.receiver = receiver_metrics.Metrics(self.registry)
        self.last_success = None  # time.monotonic() of the last PullEvents that answered
        self.registry.register(_SinceLastPull(self))


class _SinceLastPull:
    def __init__(self, pull_metrics):
        self.pull_metrics = pull_metrics

    def collect(self):
        last = self.pull_metrics.last_success
        yield GaugeMetricFamily("vod_pull_seconds_since_success", "Seconds since PullEvents last "
                                "answered (NaN before the first answer).",
                                value=float("nan") if last is None else time.monotonic() - last)


@dataclass
class BatchResult:
    """What one PullEvents round did."""

    events: int = 0
    outcomes: dict = field(default_factory=dict)
    confirmed: int = 0
    expired: int = 0
    confirm_failed: int = 0


@dataclass
class Totals:
    """What a run did, summed over its batches."""

    batches: int = 0
    events: int = 0
    confirmed: int = 0
    outcomes: dict = field(default_factory=dict)
    last_batch_at: float | None = None  # time.perf_counter() when the last batch was done

    def add(self, batch: BatchResult):
        """Count one batch in."""
        if batch.events:
            self.batches += 1
            self.last_batch_at = time.perf_counter()
        self.events += batch.events
        self.confirmed += batch.confirmed
        for outcome, count in batch.outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count


class Consumer:
    """Pulls VOD's events with `client` (receiver.vod.client.Client) into `app`'s database."""

    def __init__(self, app, client, *, pull_metrics=None, sub_app_id=None, max_backoff=30.0):
        self.app = app
        self.client = client
        self.sub_app_id = sub_app_id if sub_app_id is not None else client.sub_app_id
        self.metrics = pull_metrics or PullMetrics()
        self.max_backoff = max_backoff
        self.stop = threading.Event()
        self._local = threading.local()

    # Starting

    def check(self) -> dict:
        """DescribeEventConfig once: fails (ConsumerError) on a bad key or SubAppId; returns the config."""
        try:
            answer = self._call("DescribeEventConfig", {},
                                stop=stop_after_delay(20))
        except TencentCloudSDKException as exc:
            code = exc.get_code() or ""
            if code.startswith("UnauthorizedOperation"):
                # A key allowed to pull but not to read the config can still consume.
                log.warning("cannot read the event config (%s); pulling anyway", code)
                return {}
            raise ConsumerError(_describe_failure(exc, self.client, self.sub_app_id)) from None
        config = answer["Response"]
        if config.get("Mode") != "PULL":
            log.warning("VOD's event config is Mode %s: events are pushed to %r, none is queued for "
                        "PullEvents; switch with: vod-receiver event-config set --mode PULL",
                        config.get("Mode"), config.get("NotificationUrl") or "")
        return config

    # Running

    def run(self, workers=1, max_batches=None, until_empty=False) -> Totals:
        """Pull, store and confirm until stop is set (or `max_batches`, or an empty pull if `until_empty`).

        `workers` loops run at once, each pulling its own batches: while one waits for VOD,
        another stores, and batches stored at the same moment share a commit (the group writer).
        """
        totals, lock = Totals(), threading.Lock()

        def loop():
            while not self.stop.is_set():
                try:
                    batch = self.step()
                except _Stopped:
                    return
                except BaseException:
                    self.stop.set()  # one worker failing (a refused key) ends the others too
                    raise
                with lock:
                    totals.add(batch)
                    done = max_batches is not None and totals.batches >= max_batches
                if done or (until_empty and batch.events == 0):
                    self.stop.set()

        drainer = spool.start_drainer(self.app)
        try:
            _run_threads(loop, workers)
        finally:
            if drainer is not None:
                drainer.stop.set()
        return totals

    def step(self) -> BatchResult:
        """One round: PullEvents, store the events in one transaction, ConfirmEvents their handles."""
        started = time.perf_counter()
        raw = self._pull()
        pulled = time.perf_counter()
        response = json.loads(raw)["Response"]
        events = response.get("EventSet") or []  # VOD: "may return null" when nothing is queued
        if not events:
            self.metrics.empty_pulls.inc()
            return BatchResult()
        received_at = utcnow()
        request_id = response.get("RequestId")
        deliveries = [Delivery(body=body, received_at=received_at, channel="pull",
                               content_type="application/json", method="POST", path="/",
                               headers={"X-TC-Action": "PullEvents", "X-TC-RequestId": request_id})
                      for body in event_bodies(raw, events)]
        results = ingest_many(deliveries, app=self.app)
        stored = time.perf_counter()
        # Every delivery is now committed or spooled (written and fsynced, and drained into the
        # database later): durable either way, so confirming is safe. A parse failure was
        # recorded as a rejection with its bytes, and is confirmed too: one bad event must not
        # come back every 30 s and hold up the rest.
        _test_hook("after-commit")
        handles = [event.get("EventHandle") for event in events if isinstance(event, dict)]
        handles = [h for h in handles if isinstance(h, str) and h]
        batch = BatchResult(events=len(events))
        for (verdict, outcome), delivery in zip(results, deliveries):
            batch.outcomes[outcome] = batch.outcomes.get(outcome, 0) + 1
            self.metrics.events.labels(outcome).inc()
            self.metrics.receiver.callback(verdict, outcome, stored - pulled)
        self.metrics.batches.inc()
        self._confirm(handles, batch)
        confirmed = time.perf_counter()
        log.info("pull batch", extra={"fields": {
            "channel": "pull", "events": batch.events, **batch.outcomes,
            "confirmed": batch.confirmed, "expired": batch.expired,
            "confirm_failed": batch.confirm_failed, "request_id": request_id,
            "pull_ms": round((pulled - started) * 1000, 1),
            "store_ms": round((stored - pulled) * 1000, 1),
            "confirm_ms": round((confirmed - stored) * 1000, 1)}})
        return batch

    def _pull(self) -> bytes:
        def attempt():
            if self.stop.is_set():
                raise _Stopped
            return self._vod_client().call("PullEvents", self._params())

        raw = self._retrying(stop_never, self.stop.wait, self._pull_failed)(attempt)
        self.metrics.last_success = time.monotonic()
        return raw

    def _pull_failed(self, retry_state):
        exc = retry_state.outcome.exception()
        code = exc.get_code() if isinstance(exc, TencentCloudSDKException) else type(exc).__name__
        self.metrics.pull_errors.labels(code or "unknown").inc()
        log.warning("PullEvents failed (%s: %s); retrying in %.1f s", code,
                    _one_line(exc), retry_state.next_action.sleep)

    def _confirm(self, handles, batch):
        if not handles:
            return
        try:
            self._call("ConfirmEvents", {"EventHandles": handles},
                       stop=stop_after_delay(CONFIRM_RETRY_SECONDS))
            batch.confirmed += len(handles)
            self.metrics.confirmed.inc(len(handles))
            return
        except TencentCloudSDKException as exc:
            code = exc.get_code() or ""
            if not code.startswith("InvalidParameterValue") or len(handles) == 1:
                return self._not_confirmed(handles, batch, exc)
        # Some handle expired before this confirmation (a slow database, a long outage): VOD
        # does not say whether the others were confirmed, so each is tried on its own.
        for handle in handles:
            self._confirm([handle], batch)

    def _not_confirmed(self, handles, batch, exc):
        code = exc.get_code() or "unknown"
        expired = code.startswith("InvalidParameterValue")
        reason = "expired" if expired else code
        self.metrics.confirm_failures.labels(reason).inc(len(handles))
        if expired:
            batch.expired += len(handles)
        else:
            batch.confirm_failed += len(handles)
        # Nothing is lost either way: the events are stored, and VOD delivers them again once
        # the handles are past their 30 s, when they are counted as duplicates.
        log.warning("%d event handle(s) not confirmed (%s: %s); VOD will deliver them again and "
                    "they will be counted as duplicates", len(handles), code, _one_line(exc),
                    extra={"fields": {"handles": handles}})

    # Talking to VOD

    def _vod_client(self):
        client = getattr(self._local, "vod", None)
        if client is None:
            # One SDK client per worker thread, kept: its HTTP session reuses the connection.
            client = self._local.vod = self.client.vod(timeout=PULL_TIMEOUT)
            # requests re-reads the proxy settings from the environment on every call: 4 ms of
            # CPU per call here, a third of a 16-event round's. The SDK has already taken the
            # proxy from HTTPS_PROXY/HTTP_PROXY and passes it on each call, so nothing is lost
            # (SDK 3.1: AbstractClient.request.conn._session is its requests.Session).
            session = getattr(getattr(getattr(client, "request", None), "conn", None), "_session", None)
            if session is not None:
                session.trust_env = False
        return client

    def _params(self, **params):
        if self.sub_app_id is not None:
            params["SubAppId"] = self.sub_app_id
        return params

    def _call(self, action, params, stop):
        raw = self._retrying(stop, time.sleep, None)(self._vod_client().call, action,
                                                      self._params(**params))
        return json.loads(raw)

    def _retrying(self, stop, sleep, before_sleep):
        # Rate limits, VOD's internal errors and the network: back off with full jitter, so
        # consumers that failed together do not come back together.
        return Retrying(retry=retry_if_exception(_retryable), stop=stop, sleep=sleep,
                        wait=wait_random_exponential(multiplier=0.5, max=self.max_backoff),
                        before_sleep=before_sleep, reraise=True)


def _run_threads(target, count):
    # The calling thread is one of the workers: with one worker nothing else is started, and a
    # failure is raised here as it would be without threads.
    errors = []

    def guarded():
        try:
            target()
        except BaseException as exc:  # handed to the calling thread, raised there
            errors.append(exc)

    threads = [threading.Thread(target=guarded, name=f"pull-{n}", daemon=True)
               for n in range(1, count)]
    for thread in threads:
        thread.start()
    try:
        target()
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def event_bodies(raw: bytes, events: list) -> list[bytes]:
    """Each event of a PullEvents answer as bytes: its exact text in the answer when it can be cut out.

    The EventSet elements are found by decoding the answer again from where the array starts; if
    what is found is not what the answer holds (an unusual layout), each event is re-encoded.
    """
    text = raw.decode("utf-8")
    match = _EVENT_SET.search(text)
    if match is not None:
        decoder, position, found, values = json.JSONDecoder(), match.end(), [], []
        try:
            for _ in events:
                position = _skip(text, position)
                value, end = decoder.raw_decode(text, position)
                values.append(value)
                found.append(text[position:end].encode("utf-8"))
                position = _skip(text, end)
                if text[position] in ",]":
                    position += 1
        except (ValueError, IndexError):
            found = None
        if found is not None and values == events:
            return found
    return [json.dumps(event, ensure_ascii=False).encode("utf-8") for event in events]


_EVENT_SET = re.compile(r'"EventSet"\s*:\s*\[')


def _skip(text, position):
    while text[position] in " \t\r\n":
        position += 1
    return position


def _retryable(exc):
    # The SDK raises ClientNetworkError for a refused connection or a timeout, and
    # ServerNetworkError for a non-200 answer (a proxy's 502); vod_retryable knows both.
    return not isinstance(exc, _Stopped) and vod_retryable(exc)


def _describe_failure(exc, client, sub_app_id):
    code, message = exc.get_code() or "", _one_line(exc)
    if code.startswith("AuthFailure"):
        return f"VOD refused the API key ({code}): check TENCENTCLOUD_SECRET_ID/KEY: {message}"
    if "SubAppId" in code:
        return f"VOD refused SubAppId {sub_app_id} ({code}): check VOD_SUB_APP_ID: {message}"
    if code in ("ClientNetworkError", "ServerNetworkError"):
        where = client.api_endpoint or "vod.tencentcloudapi.com"
        return f"cannot reach VOD at {where} ({code}): check VOD_API_ENDPOINT: {message}"
    return f"VOD refused DescribeEventConfig ({code}): {message}"


def _one_line(exc):
    message = exc.get_message() if isinstance(exc, TencentCloudSDKException) else str(exc)
    return " ".join(str(message).split())[:300]


def _test_hook(point):
    # Test-only (see the module docstring): a real crash at a chosen point.
    if os.environ.get(KILL_AT) == point:
        os.kill(os.getpid(), signal.SIGKILL)
