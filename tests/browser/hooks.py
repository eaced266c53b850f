"""The handler `vod-receiver work` runs in the browser tests (RECEIVER_HANDLERS=browser.hooks:upload).

It fails on the upload whose SourceContext is FAILING while the file `fail` exists in HOOKS_DIR,
so the test has a failed attempt to replay once it removes that file.
"""
import os
from pathlib import Path

FAILING = "order-fails"


def upload(event):
    """Succeed, except on FAILING while HOOKS_DIR/fail exists."""
    if event.source_context == FAILING and (Path(os.environ["HOOKS_DIR"]) / "fail").exists():
        raise RuntimeError(f"told to fail on {event.file_id}")
