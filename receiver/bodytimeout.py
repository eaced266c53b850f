"""A deadline for reading a callback's body (RECEIVER_BODY_TIMEOUT): at it the connection's read
side is shut, so the read in progress returns what arrived and the request is refused with 408.

A socket timeout would bound each recv, not the whole read: a sender trickling a byte a second
never trips it, and holds a worker's greenlet or thread for as long as it likes. Gunicorn's
workers put the connection's socket in the WSGI environ (`gunicorn.socket`), and shutting its
read side ends a blocked recv with end-of-file, in whichever worker class waits in it. Under
gevent (the shipped worker) a timer of the event loop does that, with no thread; with threads
(gthread) one watchdog thread per process does it for every request. Elsewhere (the Flask test
client, `flask run`) there is no socket to shut and no deadline.
"""
import heapq
import itertools
import os
import socket
import sys
import threading
import time


def start(environ, seconds):
    """Start the body deadline of the request in `environ`; a Cutoff, or None without a socket."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None
    if _hub is None:
        _find_hub()
    if _hub:
        return _LoopCutoff(sock, seconds)
    return _watchdog().arm(sock, seconds)


def _shut(sock):
    # Through a duplicate of the descriptor: gevent's own socket.shutdown(SHUT_RD) would cancel
    # the waiting recv with an error, losing the bytes gunicorn had already read; shut from a
    # duplicate, the connection reaches end-of-file and the read returns what arrived.
    try:
        with socket.fromfd(sock.fileno(), sock.family, sock.type) as duplicate:
            duplicate.shutdown(socket.SHUT_RD)
    except OSError:  # the peer went away meanwhile: nothing left to cut
        pass


_hub = None  # gevent.get_hub under gevent's worker, False elsewhere: found on the first request


def _find_hub():
    # The worker patched the standard library before loading the app, once for the process.
    global _hub
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        from gevent import get_hub

        _hub = get_hub
    else:
        _hub = False


class _LoopCutoff:
    """A gevent loop timer that shuts the socket's read side unless stopped first."""

    __slots__ = ("fired", "_sock", "_timer")

    def __init__(self, sock, seconds):
        self.fired, self._sock = False, sock
        self._timer = _hub().loop.timer(seconds)
        self._timer.start(self._cut)

    def _cut(self):
        self.fired = True
        _shut(self._sock)

    def stop(self):
        """Cancel the deadline; whether it had already cut the read."""
        # The timer runs in the hub, and nothing between the read's return and this call
        # switches to it: after stop() the answer cannot change.
        self._timer.close()
        return self.fired


class _ThreadCutoff:
    """A deadline kept by the process's watchdog thread."""

    __slots__ = ("fired", "stopped", "sock", "_watchdog")

    def __init__(self, sock, watchdog):
        self.fired = self.stopped = False
        self.sock, self._watchdog = sock, watchdog

    def stop(self):
        """Cancel the deadline; whether it had already cut the read."""
        with self._watchdog.condition:  # the watchdog decides under this lock: no cut after it
            self.stopped = True
        return self.fired


class _Watchdog:
    """One thread that shuts the read side of every connection whose deadline passed."""

    # Deadlines are served up to this late, so a busy server wakes the thread at most
    # 1 / GRAIN times a second rather than once per request.
    GRAIN = 0.05

    def __init__(self):
        self.condition = threading.Condition()
        self._heap, self._order = [], itertools.count()
        threading.Thread(target=self._run, name="body-deadlines", daemon=True).start()

    def arm(self, sock, seconds):
        """A cutoff for `sock` in `seconds`."""
        cutoff = _ThreadCutoff(sock, self)
        with self.condition:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), cutoff))
            if self._heap[0][2] is cutoff:
                self.condition.notify()
        return cutoff

    def _run(self):
        with self.condition:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    cutoff = heapq.heappop(self._heap)[2]
                    if not cutoff.stopped:
                        cutoff.fired = True
                        _shut(cutoff.sock)
                self.condition.wait(self._heap[0][0] - now + self.GRAIN if self._heap else None)


_watchdogs = {}  # pid -> watchdog: a forked worker starts its own thread
_watchdogs_lock = threading.Lock()


def _watchdog():
    watchdog = _watchdogs.get(os.getpid())
    if watchdog is None:
        with _watchdogs_lock:
            watchdog = _watchdogs.get(os.getpid())
            if watchdog is None:
                watchdog = _watchdogs[os.getpid()] = _Watchdog()
    return watchdog
