"""Gunicorn settings for `vod-receiver serve` and `gunicorn wsgi:app` (via ./gunicorn.conf.py)."""
import multiprocessing
import os

from gunicorn.glogging import Logger as _Logger

# Private names only: gunicorn reads every other name here as a setting ("config" is one).
from . import auth as _auth
from . import config as _config


class RedactingLogger(_Logger):
    """Gunicorn's logger, with URL tokens and signatures redacted from the access log."""

    def atoms(self, resp, req, environ, request_time):
        secrets = _config.tokens_from_env()
        return {key: _auth.redact(value, secrets) if isinstance(value, str) else value
                for key, value in super().atoms(resp, req, environ, request_time).items()}


bind = os.environ.get("RECEIVER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RECEIVER_WORKERS") or min(2 * multiprocessing.cpu_count() + 1, 8))
# VOD waits 5 s for an answer; a request is never legitimately slower than the database
# timeout, so a worker silent for much longer than that is stuck.
timeout = 30
graceful_timeout = 20
accesslog = "-"
# The request line holds the callback URL's token: log it redacted (RedactingLogger).
logger_class = RedactingLogger
