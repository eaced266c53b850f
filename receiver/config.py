"""Configuration: one attribute per environment variable (see the README's table)."""
import os


def _int(name, default):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"{name} must be a whole number, got {value!r}") from None


def from_env():
    """Read the receiver's settings from the environment.

    Values that depend on the Flask instance folder (the default database and spool) are
    left as None here and filled in by create_app.
    """
    return {
        "RECEIVER_DATABASE_URL": os.environ.get("RECEIVER_DATABASE_URL") or None,
        "RECEIVER_SPOOL_DIR": os.environ.get("RECEIVER_SPOOL_DIR") or None,
        "RECEIVER_MAX_BODY_BYTES": _int("RECEIVER_MAX_BODY_BYTES", 1024 * 1024),
        "RECEIVER_TRUSTED_PROXIES": _int("RECEIVER_TRUSTED_PROXIES", 0),
        # VOD gives up on a callback after 5 s, so waiting for a locked or unreachable
        # database must end well before that: the request is then spooled instead.
        "RECEIVER_DB_TIMEOUT_MS": _int("RECEIVER_DB_TIMEOUT_MS", 2000),
        "RECEIVER_SPOOL_DRAIN_INTERVAL": _int("RECEIVER_SPOOL_DRAIN_INTERVAL", 10),
        # json, text, or auto: text when stderr is a terminal, JSON lines otherwise.
        "RECEIVER_LOG_FORMAT": os.environ.get("RECEIVER_LOG_FORMAT") or "auto",
        # Read by prometheus_client itself; gunicorn_conf sets it to a fresh folder. Set, the
        # metrics are summed over every worker process; unset, each app counts on its own.
        "PROMETHEUS_MULTIPROC_DIR": os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
    }
