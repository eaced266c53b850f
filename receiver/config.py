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


def _list(name):
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


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
        # Bearer tokens for the read-only admin API, comma-separated so a new one can be added
        # before the old one is removed. None: the admin API does not exist (404), never open.
        "RECEIVER_ADMIN_TOKENS": _list("RECEIVER_ADMIN_TOKENS"),
    }
