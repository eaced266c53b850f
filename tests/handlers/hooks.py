"""Handlers for the tests that run `vod-receiver work` as a process (RECEIVER_HANDLERS=hooks:…).

They talk to the test through files in HOOKS_DIR: a marker when they start, and a file the test
creates to let them finish.
"""
import os
import time
from pathlib import Path


def _dir():
    return Path(os.environ["HOOKS_DIR"])


def hang_first_time(event):
    """First run: say so, then hang (the test SIGKILLs the worker); later runs succeed."""
    marker = _dir() / f"started-{event.id}"
    first = not marker.exists()
    marker.write_text(str(os.getpid()))
    if first:
        while True:
            time.sleep(1)


def wait_for_release(event):
    """Say it started, then finish once the test creates `release` (polling, within the timeout)."""
    (_dir() / f"started-{event.id}").write_text(str(os.getpid()))
    while not (_dir() / "release").exists():
        time.sleep(0.01)
    (_dir() / f"finished-{event.id}").write_text("")


def record(event):
    """Append the event's id to `seen`."""
    with open(_dir() / "seen", "a") as f:
        f.write(f"{event.id}\n")
