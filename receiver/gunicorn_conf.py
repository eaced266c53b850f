"""Gunicorn settings for `vod-receiver serve` and `gunicorn wsgi:app` (via ./gunicorn.conf.py)."""
import glob
import multiprocessing
import os
import tempfile

bind = os.environ.get("RECEIVER_BIND", "127.0.0.1:8000")
# Sync workers: a callback is a short database write, so CPUs bound the throughput.
workers = int(os.environ.get("RECEIVER_WORKERS") or min(2 * multiprocessing.cpu_count() + 1, 8))
# VOD waits 5 s for an answer and then sends again. A request waits at most RECEIVER_DB_TIMEOUT_MS
# (2 s) for the database and then spools, so a worker silent for 4 s is stuck: killing it
# frees the slot before VOD's retry arrives, and the delivery is re-sent, not lost.
timeout = 4
# On SIGTERM workers finish the callbacks in hand (each bounded as above), then exit.
graceful_timeout = 10
accesslog = "-"
# Gunicorn 24+ opens a control socket at one fixed path per user; several receivers (or the
# benchmark's two servers) on one host would take it from each other, and nothing here uses it.
control_socket_disable = True

# Metrics of all workers are summed from files in one folder (prometheus_client multiprocess
# mode). It must be set before any worker imports prometheus_client, hence here, at load.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vod-receiver-metrics-")


def on_starting(server):
    """Start every master from zero counts: files left by an earlier run would be summed in."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, exist_ok=True)
    for path in glob.glob(os.path.join(folder, "*.db")):
        os.unlink(path)


def child_exit(server, worker):
    """Let the metrics of a worker that exited stop counting as live."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
