"""VOD's reliable callback (Mode PULL) and event configuration, as the emulator answers them.

PullEvents / ConfirmEvents / DescribeEventsState / DescribeEventConfig / ModifyEventConfig
(vod-spec §1, §3). With Mode PULL the Dispatcher puts each event in the `EventQueue` instead of
pushing it. A pull hands out at most 16 events, each under a new EventHandle; an event whose
handle is not confirmed within the window (30 s, VOD's) goes back to the head of the queue and
is handed out again under another handle: at-least-once, as VOD promises.
"""
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

# The module, not its names: api.py imports this one (and events.py) while it is still loading.
from . import api

PUSH, PULL = "PUSH", "PULL"
MAX_EVENTS = 16  # per PullEvents, and handles per ConfirmEvents (vod-spec §3)
HANDLE_SECONDS = 30.0
LONG_POLL_SECONDS = 5.0
SWITCHES = ("UploadMediaCompleteEventSwitch", "DeleteMediaCompleteEventSwitch",
            "PersistenceCompleteEventSwitch")
# Which switch lets which event type out (the only three the API can turn off, vod-spec §1).
SWITCHED_EVENTS = {"NewFileUpload": SWITCHES[0], "FileDeleted": SWITCHES[1],
                   "PersistenceComplete": SWITCHES[2]}
MAX_SIGN_KEY = 32


@dataclass
class EventConfig:
    """What DescribeEventConfig answers; the emulator's callback URL and SignKey live on it too."""

    mode: str = PUSH
    # The emulator has always pushed NewFileUpload; VOD's own default for a new account is OFF.
    switches: dict = field(default_factory=lambda: {SWITCHES[0]: "ON", SWITCHES[1]: "OFF",
                                                    SWITCHES[2]: "OFF"})

    def lets_out(self, event: dict) -> bool:
        """Whether an event of this type is sent at all (its switch, if it has one, is ON)."""
        switch = SWITCHED_EVENTS.get(event.get("EventType"))
        return switch is None or self.switches[switch] == "ON"


@dataclass
class _Message:
    event_id: int
    event: dict
    deliveries: int = 0
    handle: str | None = None
    expires_at: float = 0.0


class EventQueue:
    """Events waiting to be pulled, and those pulled but not yet confirmed; thread-safe.

    `clock` is monotonic seconds (replace it to test expiry without waiting).
    """

    def __init__(self, handle_seconds=HANDLE_SECONDS, clock=time.monotonic):
        self.handle_seconds = handle_seconds
        self.clock = clock
        self._changed = threading.Condition()
        self._ready: deque[_Message] = deque()
        self._in_flight: dict[str, _Message] = {}
        self._confirmed: list[int] = []  # event ids, in the order they were confirmed
        self._deliveries = 0
        self._redeliveries = 0
        self._closed = False

    def put(self, event_id: int, event: dict) -> None:
        """Queue one event for PullEvents and wake a waiting pull."""
        with self._changed:
            self._ready.append(_Message(event_id, event))
            self._changed.notify_all()

    def pull(self, limit=MAX_EVENTS, wait=LONG_POLL_SECONDS) -> list[tuple[str, dict]]:
        """Up to `limit` (handle, event) pairs; waits up to `wait` s for the first one to come."""
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                self._expire()
                if self._ready or self._closed:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                # Wake for a new event, or when the oldest handle runs out and its event is due again.
                self._changed.wait(min(left, self._next_expiry()))
            taken = []
            now = self.clock()
            while self._ready and len(taken) < limit:
                message = self._ready.popleft()
                message.handle = secrets.token_hex(16)
                message.expires_at = now + self.handle_seconds
                message.deliveries += 1
                self._deliveries += 1
                self._redeliveries += message.deliveries > 1
                self._in_flight[message.handle] = message
                taken.append((message.handle, message.event))
            return taken

    def confirm(self, handles: list[str]) -> list[int]:
        """Confirm handles (all or none); returns their event ids, or raises KeyError naming the bad ones."""
        with self._changed:
            self._expire()
            unknown = [h for h in handles if h not in self._in_flight]
            if unknown:
                raise KeyError(unknown)
            ids = []
            for handle in dict.fromkeys(handles):
                ids.append(self._in_flight.pop(handle).event_id)
            self._confirmed += ids
            self._changed.notify_all()
            return ids

    def close(self) -> None:
        """Wake every waiting pull (the emulator is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait(self, predicate, timeout=10.0):
        """Wait until predicate(queue) is true (checked whenever the queue changes); TimeoutError if not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._expire()
                if predicate(self):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"queue not as expected after {timeout} s: {self.snapshot()}")
                self._changed.wait(min(left, self._next_expiry(), 0.1))

    # Inspection, for tests and DescribeEventsState

    @property
    def depth(self) -> int:
        """Events waiting to be pulled (expired handles count: their events are due again)."""
        with self._changed:
            self._expire()
            return len(self._ready)

    @property
    def in_flight(self) -> int:
        """Events pulled whose handles are neither confirmed nor expired."""
        with self._changed:
            self._expire()
            return len(self._in_flight)

    @property
    def confirmed(self) -> list[int]:
        """Event ids confirmed so far, in order (an id twice: delivered twice and confirmed twice)."""
        with self._changed:
            return list(self._confirmed)

    @property
    def deliveries(self) -> int:
        """Events handed out by PullEvents, redeliveries included."""
        with self._changed:
            return self._deliveries

    @property
    def redeliveries(self) -> int:
        """Events handed out again after their handle expired."""
        with self._changed:
            return self._redeliveries

    def snapshot(self) -> dict:
        """Depth, in flight, confirmed, deliveries and redeliveries in one consistent reading."""
        with self._changed:
            self._expire()
            return {"depth": len(self._ready), "in_flight": len(self._in_flight),
                    "confirmed": len(self._confirmed), "deliveries": self._deliveries,
                    "redeliveries": self._redeliveries}

    def _expire(self):
        now = self.clock()
        expired = [m for m in self._in_flight.values() if m.expires_at <= now]
        if not expired:
            return
        for message in expired:
            del self._in_flight[message.handle]
        # Back to the head, oldest first: they were due before anything queued since.
        for message in sorted(expired, key=lambda m: m.event_id, reverse=True):
            self._ready.appendleft(message)
        self._changed.notify_all()

    def _next_expiry(self):
        if not self._in_flight:
            return 3600.0
        return max(0.001, min(m.expires_at for m in self._in_flight.values()) - self.clock())


# The API actions (registered in api.ACTIONS)

def pull_events(emulator, params):
    """PullEvents: long poll for up to 16 events, each with its EventHandle."""
    api._check(params, {"SubAppId": (int, False), "ExtInfo": (str, False)})
    api._check_sub_app(emulator, params)
    taken = emulator.event_queue.pull(MAX_EVENTS, emulator.long_poll_seconds)
    # VOD says EventSet "may return null" when empty; an empty list is what the SDK copes with
    # best, and a consumer must accept both.
    return {"EventSet": [{**event, "EventHandle": handle} for handle, event in taken]}


def confirm_events(emulator, params):
    """ConfirmEvents: the handles' events are done; an unknown or expired handle is a parameter error."""
    api._check(params, {"EventHandles": (list, True), "SubAppId": (int, False), "ExtInfo": (str, False)})
    api._check_sub_app(emulator, params)
    handles = params["EventHandles"]
    if not handles:
        raise api.ApiError("MissingParameter", "EventHandles is empty.")
    if len(handles) > MAX_EVENTS:
        raise api.ApiError("InvalidParameterValue", f"At most {MAX_EVENTS} EventHandles per call.")
    try:
        emulator.event_queue.confirm(handles)
    except KeyError as exc:
        # VOD: a handle is valid 30 s after the pull, later "a parameter error (4000)" (vod-spec
        # §3.2). VOD does not say whether the other handles of the call count; the emulator takes
        # the strict reading (none do), so a consumer must cope with either.
        bad = exc.args[0]
        raise api.ApiError("InvalidParameterValue", f"{len(bad)} of {len(handles)} EventHandles are "
                       f"unknown or expired (valid {emulator.event_queue.handle_seconds:g} s after "
                       f"PullEvents), e.g. {bad[0]!r}; nothing was confirmed.") from None
    return {}


def describe_events_state(emulator, params):
    """DescribeEventsState: CountOfEventsToPull (VOD's lags minutes; the emulator's is exact)."""
    api._check(params, {"SubAppId": (int, False)})
    api._check_sub_app(emulator, params)
    return {"CountOfEventsToPull": emulator.event_queue.depth}


def describe_event_config(emulator, params):
    """DescribeEventConfig: mode, v3 callback URL and the three switches."""
    api._check(params, {"SubAppId": (int, False)})
    api._check_sub_app(emulator, params)
    config = emulator.event_config
    return {"Mode": config.mode, "NotificationUrl": emulator.callback_url or "", **config.switches}


def modify_event_config(emulator, params):
    """ModifyEventConfig: change what is given; NotificationUrl "" clears the URL."""
    api._check(params, {"SubAppId": (int, False), "Mode": (str, False), "NotificationUrl": (str, False),
                    "SignKey": (str, False), **{name: (str, False) for name in SWITCHES}})
    api._check_sub_app(emulator, params)
    mode = params.get("Mode")
    if mode is not None and mode not in (PUSH, PULL):
        raise api.ApiError("InvalidParameterValue.Mode", f"Mode {mode!r} is neither PUSH nor PULL.")
    for name in SWITCHES:
        if params.get(name) not in (None, "ON", "OFF"):
            raise api.ApiError("InvalidParameterValue", f"{name} must be ON or OFF, not {params[name]!r}.")
    url = params.get("NotificationUrl")
    if url and not url.startswith(("http://", "https://")):
        raise api.ApiError("InvalidParameterValue.NotificationUrl", f"NotificationUrl {url!r} is not an "
                       "http:// or https:// URL.")
    sign_key = params.get("SignKey")
    if sign_key is not None and (len(sign_key) > MAX_SIGN_KEY or not sign_key.isascii()
                                 or (sign_key and not sign_key.isalnum())):
        raise api.ApiError("InvalidParameterValue.SignKey", f"SignKey must be at most {MAX_SIGN_KEY} "
                       "letters and digits.")
    config = emulator.event_config
    with emulator.state.lock:
        if mode is not None:
            config.mode = mode
        for name in SWITCHES:
            if params.get(name) is not None:
                config.switches[name] = params[name]
        if url is not None:
            emulator.callback_url = url or None
        if sign_key is not None:
            emulator.sign_key = sign_key or None
    return {}


ACTIONS = {"PullEvents": pull_events, "ConfirmEvents": confirm_events,
           "DescribeEventsState": describe_events_state, "DescribeEventConfig": describe_event_config,
           "ModifyEventConfig": modify_event_config}
