"""Configuration: one attribute per environment variable (see the README's table)."""
import os

from . import auth

# How far past T (VOD's expiry time) a signature is still accepted. VOD signs for 10 minutes by
# default, and a refused callback is lost for good (VOD ignores the answer and re-sends only on
# timeout, vod-spec §4), so this leans towards accepting: it covers a clock that is minutes off,
# as unsynchronised VMs drift, and adds at most 5 minutes to the replay window of a Sign that
# does not cover the body anyway.
DEFAULT_SIGN_CLOCK_SKEW = 300


def _int(name, default):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"{name} must be a whole number, got {value!r}") from None


def _float(name, default):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise RuntimeError(f"{name} must be a number of seconds, got {value!r}") from None


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
        # Secrets: none has a default, and each is optional (unset = that check is off).
        "RECEIVER_CALLBACK_TOKENS": os.environ.get("RECEIVER_CALLBACK_TOKENS", ""),
        "VOD_SIGN_KEYS": os.environ.get("VOD_SIGN_KEYS", ""),
        "RECEIVER_SIGN_CLOCK_SKEW": _int("RECEIVER_SIGN_CLOCK_SKEW", DEFAULT_SIGN_CLOCK_SKEW),
        "RECEIVER_ALLOWED_CIDRS": os.environ.get("RECEIVER_ALLOWED_CIDRS", ""),
        # Bearer tokens for the read-only admin API, comma-separated so a new one can be added
        # before the old one is removed. None: the admin API does not exist (404), never open.
        "RECEIVER_ADMIN_TOKENS": os.environ.get("RECEIVER_ADMIN_TOKENS", ""),
        # json, text, or auto: text when stderr is a terminal, JSON lines otherwise.
        "RECEIVER_LOG_FORMAT": os.environ.get("RECEIVER_LOG_FORMAT") or "auto",
        # Read by prometheus_client itself; gunicorn_conf sets it to a fresh folder. Set, the
        # metrics are summed over every worker process; unset, each app counts on its own.
        "PROMETHEUS_MULTIPROC_DIR": os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        # The application's handlers (receiver/handlers): EventType=module:function, comma-separated,
        # imported by `vod-receiver work` when it starts.
        "RECEIVER_HANDLERS": os.environ.get("RECEIVER_HANDLERS", ""),
        "RECEIVER_HANDLER_MAX_ATTEMPTS": _int("RECEIVER_HANDLER_MAX_ATTEMPTS", 5),
        "RECEIVER_HANDLER_TIMEOUT": _float("RECEIVER_HANDLER_TIMEOUT", 60.0),
        # Retry n waits between half and all of min(MAX, BACKOFF * 2^(n-1)) seconds.
        "RECEIVER_HANDLER_BACKOFF": _float("RECEIVER_HANDLER_BACKOFF", 10.0),
        "RECEIVER_HANDLER_BACKOFF_MAX": _float("RECEIVER_HANDLER_BACKOFF_MAX", 3600.0),
        # How often an idle worker looks for new events without a NOTIFY (always, on SQLite).
        "RECEIVER_HANDLER_POLL_INTERVAL": _float("RECEIVER_HANDLER_POLL_INTERVAL", 1.0),
        # host:port where `vod-receiver work` serves its own /metrics; unset: none.
        "RECEIVER_WORKER_METRICS_BIND": os.environ.get("RECEIVER_WORKER_METRICS_BIND") or None,
    }


def check(config):
    """Parse the list settings in `config` in place, failing on values that cannot work.

    Lists come as comma-separated text (from the environment) or as any iterable of strings
    (from create_app's overrides). Error messages never repeat a secret.
    """
    tokens = _list(config["RECEIVER_CALLBACK_TOKENS"])
    for number, token in enumerate(tokens, 1):
        if not auth.TOKEN_PATTERN.fullmatch(token):
            raise RuntimeError(
                f"RECEIVER_CALLBACK_TOKENS: token {number} of {len(tokens)} must be 16 to 200 "
                "letters, digits or - . _ ~ (it is a URL path segment); generate one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    config["RECEIVER_CALLBACK_TOKENS"] = tokens
    config["VOD_SIGN_KEYS"] = _list(config["VOD_SIGN_KEYS"])
    config["RECEIVER_ADMIN_TOKENS"] = _list(config["RECEIVER_ADMIN_TOKENS"])
    try:
        config["RECEIVER_ALLOWED_CIDRS"] = auth.parse_networks(_list(config["RECEIVER_ALLOWED_CIDRS"]))
    except ValueError as exc:
        raise RuntimeError(f"RECEIVER_ALLOWED_CIDRS: {exc}") from None
    for name in ("RECEIVER_SIGN_CLOCK_SKEW", "RECEIVER_TRUSTED_PROXIES", "RECEIVER_HANDLER_BACKOFF",
                 "RECEIVER_HANDLER_BACKOFF_MAX"):
        if config[name] < 0:
            raise RuntimeError(f"{name} must not be negative, got {config[name]}")
    for name in ("RECEIVER_HANDLER_MAX_ATTEMPTS", "RECEIVER_HANDLER_TIMEOUT",
                 "RECEIVER_HANDLER_POLL_INTERVAL"):
        if not config[name] > 0:
            raise RuntimeError(f"{name} must be more than 0, got {config[name]}")


def tokens_from_env():
    """RECEIVER_CALLBACK_TOKENS as a tuple, for code that runs outside the app (gunicorn's logger)."""
    return _list(os.environ.get("RECEIVER_CALLBACK_TOKENS", ""))


def _list(value):
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return tuple(str(item).strip() for item in items if str(item).strip())
