"""Gunicorn settings for `vod-receiver serve` and `gunicorn wsgi:app` (via ./gunicorn.conf.py)."""
import multiprocessing
import os

bind = os.environ.get("RECEIVER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RECEIVER_WORKERS") or min(2 * multiprocessing.cpu_count() + 1, 8))
# VOD waits 5 s for an answer; a request is never legitimately slower than the database
# timeout, so a worker silent for much longer than that is stuck.
timeout = 30
graceful_timeout = 20
accesslog = "-"
