"""Gunicorn settings for `vod-receiver serve` and `gunicorn wsgi:app` (via ./gunicorn.conf.py)."""
import gc as _gc
import glob
import logging as _logging
import os
import shutil
import sys as _sys
import tempfile

from gunicorn.glogging import Logger as _Logger

# Private names only: gunicorn reads every other name here as a setting ("config" is one).
from . import auth as _auth
from . import config as _config


class RedactingLogger(_Logger):
    """Gunicorn's logger, with URL tokens and signatures redacted from the access log."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.secrets = _config.tokens_from_env()  # read once: the workers' settings are fixed

    def atoms(self, resp, req, environ, request_time):
        return {key: _auth.redact(value, self.secrets) if isinstance(value, str) else value
                for key, value in super().atoms(resp, req, environ, request_time).items()}


# Read in the master, before anything forks: a bad setting stops gunicorn here with one line,
# instead of every worker failing to boot with a traceback.
try:
    _config.check_environment()
    bind = _config.value("RECEIVER_BIND")
    workers = _config.value("RECEIVER_WORKERS")
except _config.ConfigError as _exc:
    _sys.exit(f"Error: {_exc}")
# A callback spends most of its time waiting for the database (every commit is synced), so a
# worker serves many at once: gevent's worker runs each request in a greenlet. The callbacks a
# worker holds share the next commit (receiver/writer.py), and switching between greenlets costs
# far less than handing the interpreter lock between threads (measured against 8 threads per
# worker: docs/operations.md, "What was done for the goals").
# psycopg 3 waits for PostgreSQL cooperatively; SQLite calls are short and block the worker.
# (GUNICORN_CMD_ARGS="--worker-class gthread --threads 8" serves with threads instead.)
worker_class = "gevent"
worker_connections = 1000
# VOD waits 5 s for an answer and then sends again. A request waits at most RECEIVER_BODY_TIMEOUT
# (2 s) for its body and RECEIVER_DB_TIMEOUT_MS (2 s, in all) for the database, then refuses or
# spools, so no request needs more than that; a worker whose
# main loop is silent for 4 s is stuck, and killing it frees its connections before VOD's
# retry arrives (the delivery is re-sent, not lost).
timeout = 4
# On SIGTERM workers stop accepting, finish the callbacks in hand (each bounded as above), exit.
graceful_timeout = 10
keepalive = 2
accesslog = "-"
# The request line holds the callback URL's token: log it redacted (RedactingLogger).
logger_class = RedactingLogger
# Gunicorn 24+ opens a control socket at one fixed path per user; several receivers (or the
# benchmark's two servers) on one host would take it from each other, and nothing here uses it.
control_socket_disable = True


def on_starting(server):
    """Give the workers' metrics one folder, emptied: files of an earlier run would be summed in.

    prometheus_client's multiprocess mode sums the files every worker writes there. It reads
    the variable when a worker imports it, after this hook and the fork (do not preload_app).
    """
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vod-receiver-metrics-")
        server.receiver_metrics_tmp = folder
    os.makedirs(folder, exist_ok=True)
    for path in glob.glob(os.path.join(folder, "*.db")):
        os.unlink(path)


def on_exit(server):
    """Remove the metrics folder if on_starting made it."""
    if getattr(server, "receiver_metrics_tmp", None):
        shutil.rmtree(server.receiver_metrics_tmp, ignore_errors=True)


def post_fork(server, worker):
    """Make SIGINT and SIGQUIT stop a worker as SIGTERM does: finish the callbacks in hand.

    Ctrl-C reaches the master and every worker at once, and the master then sends SIGQUIT.
    Gunicorn's gevent worker quits by raising SystemExit in a greenlet after a 0.1 s sleep; when
    the worker's loop ended first, gevent printed that SystemExit as a traceback at interpreter
    shutdown, on most stops. Stopping gracefully (bounded by graceful_timeout, after which the
    master kills) also never cuts a callback off mid-commit. Set before the worker installs its
    signal handlers, which look the method up then.
    """
    worker.handle_quit = worker.handle_exit


def worker_exit(server, worker):
    """Flush and close the logging handlers while the interpreter is whole.

    Left to interpreter shutdown, each handler's weak-reference callback takes logging's lock,
    whose owner check calls gevent's get_ident after gevent's module globals were cleared:
    "TypeError: 'NoneType' object is not callable", once per worker on every stop. Emptying
    logging._handlerList (private) after logging.shutdown() leaves those callbacks nothing to do.
    """
    _logging.shutdown()
    del _logging._handlerList[:]


def post_worker_init(worker):
    """Leave the app's own objects out of the collector's full passes (gc.freeze).

    A worker holds a few hundred thousand long-lived objects once the app is loaded (modules,
    SQLAlchemy's and marshmallow's structures), and every full collection walked them all.
    """
    _gc.collect()
    _gc.freeze()


def child_exit(server, worker):
    """Let the metrics of a worker that exited stop counting as live."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
