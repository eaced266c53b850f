"""Pushing events to the callback URL the way VOD does, and the policy that makes it misbehave on purpose.

VOD (vod-spec §4): POST with a JSON body, `Sign`/`T` added when a SignKey is set, a 5 s timeout,
a retry only after a timeout (at most 3 sends), the answer ignored. Pushes go out from one
background thread in order, so CommitUpload answers at once and tests see a stable order unless
they ask the policy for another.
"""
import http.client
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..auth import sign
from .state import PushRecord

MAX_SENDS = 3
SIGN_VALIDITY = 600  # T is an expiry; VOD's default validity is 10 minutes


class _Rule:
    def __init__(self, count, **values):
        self.left = count  # None: every event until reset()
        self.values = values


class PushPolicy:
    """How the next pushes misbehave; each rule covers the next `count` events (None: all until reset)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> "PushPolicy":
        """Back to VOD's ordinary behaviour."""
        with self._lock:
            self._rules = {}
        return self

    def drop(self, count: int | None = 1) -> "PushPolicy":
        """Lose the next `count` events: never sent, recorded with outcome "dropped"."""
        return self._set("drop", count)

    def duplicate(self, count: int | None = 1, copies: int = 2) -> "PushPolicy":
        """Send each of the next `count` events `copies` times, as VOD does after a slow answer."""
        return self._set("duplicate", count, copies=copies)

    def delay(self, seconds: float, count: int | None = None) -> "PushPolicy":
        """Wait `seconds` before sending each of the next `count` events (later events queue behind)."""
        return self._set("delay", count, seconds=seconds)

    def reorder(self, count: int | None = 1, max_hold: float = 5.0) -> "PushPolicy":
        """Hold each of the next `count` events until the event after it was sent (or `max_hold` s passed)."""
        return self._set("reorder", count, max_hold=max_hold)

    def before_commit_returns(self, count: int | None = None) -> "PushPolicy":
        """Deliver the next `count` events from CommitUpload itself, before its answer is sent."""
        return self._set("sync", count)

    def _set(self, name, count, **values):
        with self._lock:
            self._rules[name] = _Rule(count, **values)
        return self

    def take(self, committing: bool) -> dict:
        """What to do with the event being published now; uses up one of each rule's count."""
        decision = {}
        with self._lock:
            for name, rule in list(self._rules.items()):
                if name == "sync" and not committing:
                    continue
                decision[name] = rule.values or True
                if rule.left is not None:
                    rule.left -= 1
                    if rule.left <= 0:
                        del self._rules[name]
        return decision


@dataclass
class _Job:
    event_id: int
    event: dict
    copies: int = 1
    delay: float = 0.0
    hold_until: float | None = None


class Pusher:
    """Sends events to the callback URL from a background thread, recording every attempt."""

    def __init__(self, emulator, state, policy: PushPolicy):
        self.emulator = emulator
        self.state = state
        self.policy = policy
        self._queue: queue.Queue = queue.Queue()
        self._held: list[_Job] = []
        self._held_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Start the sending thread."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="vod-emulator-push", daemon=True)
        self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """Stop sending; events still waiting are recorded as "cancelled"."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(wait)
        with self._held_lock:
            pending, self._held = self._held, []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                pending.append(job)
        for job in pending:
            self._record(job, 1, 1, None, b"", "cancelled")

    def submit(self, event_id: int, event: dict, committing: bool = False) -> None:
        """Send one event as the policy says: now (in this thread), queued, held back, or not at all."""
        decision = self.policy.take(committing)
        if "drop" in decision:
            self._record(_Job(event_id, event), 1, 1, None, b"", "dropped")
            return
        job = _Job(event_id, event, copies=decision.get("duplicate", {}).get("copies", 1),
                   delay=decision.get("delay", {}).get("seconds", 0.0))
        if "sync" in decision:
            self._deliver(job)
        elif "reorder" in decision:
            job.hold_until = time.monotonic() + decision["reorder"]["max_hold"]
            with self._held_lock:
                self._held.append(job)
            return
        else:
            self._queue.put(job)
        with self._held_lock:  # the event that overtakes the held ones is on its way: they follow it
            held, self._held = self._held, []
        for waiting in held:
            self._queue.put(waiting)

    def _run(self):
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=0.05)
            except queue.Empty:
                self._release_expired()
                continue
            if job is None:
                break
            self._deliver(job)

    def _release_expired(self):
        now = time.monotonic()
        with self._held_lock:
            due = [job for job in self._held if job.hold_until <= now]
            self._held = [job for job in self._held if job.hold_until > now]
        for job in due:
            self._queue.put(job)

    def _deliver(self, job: _Job):
        if job.delay:
            time.sleep(job.delay)
        for copy in range(1, job.copies + 1):
            url = self.emulator.callback_url
            if not url:
                self._record(job, copy, 1, None, b"", "no-url")
                continue
            for attempt in range(1, MAX_SENDS + 1):
                url, body = self._signed(url, job.event)
                outcome = self._send(job, copy, attempt, url, body)
                if outcome != "timeout" or self._stopping.is_set():
                    break  # VOD retries after a timeout only; other failures are final

    def _signed(self, url, event):
        key = self.emulator.sign_key
        if not key:
            return url, _encode(event)
        expiry = int(self.emulator.clock()) + SIGN_VALIDITY
        signature = sign(key, expiry)
        if self.emulator.sign_location == "query":
            return f"{url}{'&' if '?' in url else '?'}Sign={signature}&T={expiry}", _encode(event)
        # VOD documents Sign and T as callback fields, not where they go (vod-spec §4, §11); their
        # PascalCase names match the body's, so the default puts them in the body, after the event.
        return url, _encode({**event, "Sign": signature, "T": expiry})

    def _send(self, job, copy, attempt, url, body) -> str:
        parts = urlsplit(url)
        started, clock = time.time(), time.monotonic()
        connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_type(parts.hostname, parts.port, timeout=self.emulator.push_timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        status = response = error = None
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            status, response = answer.status, answer.read(64 * 1024)
            outcome = "delivered"  # whatever the status: VOD ignores the answer
        except (socket.timeout, TimeoutError) as exc:
            outcome, error = "timeout", str(exc) or "timed out"
        except (OSError, http.client.HTTPException) as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()
        self._record(job, copy, attempt, url, body, outcome, status, response, error,
                     started, time.monotonic() - clock)
        return outcome

    def _record(self, job, copy, attempt, url, body, outcome, status=None, response=None, error=None,
                started=None, elapsed=0.0):
        self.state.add_push(PushRecord(
            event_id=job.event_id, event_type=job.event.get("EventType", ""), attempt=attempt, url=url,
            body=body, outcome=outcome, copy=copy, status=status, response=response, error=error,
            started_at=started if started is not None else time.time(), elapsed=elapsed))


def _encode(event: dict) -> bytes:
    # Non-ASCII text (a SourceContext in Chinese) goes as UTF-8, not \u escapes, so the bytes
    # a receiver keeps are the characters the uploader sent.
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
