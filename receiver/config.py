"""Configuration: one table of every environment variable, each checked at start (README's table).

A setting is one `Setting` in SETTINGS: its name, a parser that turns the text (or a Python value
given to create_app) into the value the code uses and says what is wrong otherwise, the default,
an example and a one-line meaning. Everything else here is derived from the table: reading the
environment, the checks, the one-line errors and the warning for names that are nearly a setting.
"""
import difflib
import ipaddress
import multiprocessing
import os
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from . import auth

# How far past T (VOD's expiry time) a signature is still accepted. VOD signs for 10 minutes by
# default, and a refused callback is lost for good (VOD ignores the answer and re-sends only on
# timeout, vod-spec §4), so this leans towards accepting: it covers a clock that is minutes off,
# as unsynchronised VMs drift, and adds at most 5 minutes to the replay window of a Sign that
# does not cover the body anyway.
DEFAULT_SIGN_CLOCK_SKEW = 300

# Variables with these prefixes are ours: one that is not in the table is a mistake worth a word.
PREFIXES = ("RECEIVER_", "VOD_", "TENCENTCLOUD_")

_GENERATE = "$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"


class ConfigError(RuntimeError):
    """A setting that cannot work; its text is one line: the variable, the problem, an example.

    A RuntimeError, as bad settings were before there was a class for them.
    """

    def __init__(self, name, problem, shown=None, example=None):
        self.name, self.problem = name, problem
        head = name if shown is None else f"{name}={_quote(shown)}"
        tail = f"; for example {name}={example}" if example else ""
        super().__init__(f"{head}: {problem}{tail}")


@dataclass(frozen=True)
class Setting:
    """One environment variable: how it is read and checked, and what it is for."""

    name: str
    parse: Callable[[Any], Any]  # text (or a Python value) -> the value used; ValueError says why not
    default: Any                 # the value when unset (a callable is called then)
    example: str
    meaning: str
    secret: bool = False         # never repeated in an error
    # Who reads it: "app" settings live in app.config and are checked by create_app, every command
    # and the gunicorn master; "server" ones by `serve` and gunicorn; "bench" and "tests" ones are
    # read only there (listed so that they are documented and not taken for typos).
    scope: str = "app"

    def default_value(self):
        """The default, computed if it depends on the machine."""
        return self.default() if callable(self.default) else self.default

    def read(self, value):
        """`value` parsed and checked, or the default when it is unset or blank."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return self.default_value()
        try:
            return self.parse(value)
        except ValueError as exc:
            raise ConfigError(self.name, str(exc), None if self.secret else value,
                              self.example) from None


# --- parsers: each takes the environment's text or a Python value, and raises ValueError ---------


def whole_number(low, high):
    """A parser for an integer from `low` to `high`."""
    def parse(value):
        number = value
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                number = None
        if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return number
    return parse


def seconds(above, at_most):
    """A parser for a number of seconds greater than `above` and at most `at_most`."""
    def parse(value):
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            number = None
        if isinstance(value, bool) or number is None or not above < number <= at_most:
            raise ValueError(f"must be a number of seconds above {above:g} and at most {at_most:g}")
        return number
    return parse


def one_of(*choices):
    """A parser for one of `choices`."""
    def parse(value):
        if value not in choices:
            raise ValueError(f"must be {', '.join(choices[:-1])} or {choices[-1]}")
        return value
    return parse


def folder(value):
    """A folder's path; it need not exist yet, but must not be a file."""
    path = str(value).strip()
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError("is a file, not a folder")
    return path


def text(value):
    """Any text, stripped: a name, a key, an endpoint a later check may refine."""
    return str(value).strip()


def text_list(value):
    """Comma-separated text, or any iterable of strings, as a tuple without blanks."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return tuple(str(item).strip() for item in items if str(item).strip())


def callback_tokens(value):
    """URL tokens: each one path segment of 16 to 200 unreserved characters."""
    tokens = text_list(value)
    for number, token in enumerate(tokens, 1):
        if not auth.TOKEN_PATTERN.fullmatch(token):
            raise ValueError(f"token {number} of {len(tokens)} must be 16 to 200 letters, digits "
                             "or - . _ ~ (it is a URL path segment)")
    return tokens


def networks(value):
    """Addresses or CIDR networks, comma-separated."""
    if not isinstance(value, str) and all(
            isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)) for item in value):
        return tuple(value)  # parsed already (an embedding app or a test passed networks)
    return auth.parse_networks(text_list(value))


def database_url(value):
    """A SQLAlchemy URL for SQLite or PostgreSQL (through psycopg 3), whose folder exists."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    if isinstance(value, URL):  # str() of a URL object hides its password
        value = value.render_as_string(hide_password=False)
    try:
        url = make_url(str(value).strip())
    except ArgumentError:
        raise ValueError("is not a database URL") from None
    # Read from the name: asking SQLAlchemy for the driver would import it, or fail to.
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgres", "postgresql") and driver != "psycopg":
        # SQLAlchemy reads postgres:// as no dialect at all and postgresql:// as psycopg2, which
        # is not installed: psycopg 3 is the driver that cooperates with gevent.
        raise ValueError(f"{_redacted(url)} names no driver the receiver uses; write "
                         "postgresql+psycopg://…")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ValueError(f"{_redacted(url)}: use sqlite:///PATH")
        if url.database not in (None, "", ":memory:"):
            parent = os.path.dirname(os.path.abspath(url.database))
            if not os.path.isdir(parent):
                raise ValueError(f"the folder of the SQLite file, {parent}, does not exist; "
                                 "create it first")
    elif backend != "postgresql":
        raise ValueError(f"{_redacted(url)} is neither SQLite nor PostgreSQL")
    return str(value).strip()  # as given: rendering it again could change its escaping


def bind_address(value):
    """What gunicorn listens on: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N."""
    address = str(value).strip()
    if (address.startswith("unix:") and len(address) > 5) or (
            address.startswith("fd://") and address[5:].isdigit()):
        return address
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 address
    elif ":" in host:
        host = ""  # an IPv6 address without its brackets: the port would be ambiguous
    if not (host and port.isdigit() and 0 < int(port) < 65536) or any(
            c.isspace() or c == "/" for c in address):
        raise ValueError("must be HOST:PORT (a port from 1 to 65535) or unix:PATH")
    return address


def _default_workers():
    # gevent workers each serve many requests; past 8 they only add memory and connections.
    return min(2 * multiprocessing.cpu_count() + 1, 8)


def _redacted(url):
    return url.render_as_string(hide_password=True)


def _quote(value):
    return shlex.quote(str(value))


# --- the table: one entry per variable; add a feature's settings here -----------------------

SETTINGS = (
    Setting("RECEIVER_DATABASE_URL", database_url, None,
            "postgresql+psycopg://vod:secret@db.internal:5432/vod",
            "SQLAlchemy URL (SQLite, or PostgreSQL as postgresql+psycopg://); default "
            "sqlite:///<instance>/receiver.db", secret=True),
    Setting("RECEIVER_SPOOL_DIR", folder, None, "/var/lib/vod-receiver/spool",
            "where deliveries wait while the database is unavailable; default <instance>/spool"),
    # The smallest VOD body is a few hundred bytes; a limit under 1 KiB refuses real callbacks.
    Setting("RECEIVER_MAX_BODY_BYTES", whole_number(1024, 100 * 1024 * 1024), 1024 * 1024,
            "1048576", "largest callback body accepted (413 above)"),
    Setting("RECEIVER_TRUSTED_PROXIES", whole_number(0, 10), 0, "1",
            "how many proxies in front append to X-Forwarded-For"),
    # VOD gives up on a callback after 5 s, so waiting for a locked or unreachable database must
    # end well before that: the request is then spooled instead. Zero or less broke every write.
    Setting("RECEIVER_DB_TIMEOUT_MS", whole_number(1, 60_000), 2000, "2000",
            "longest wait for a locked or unreachable database before spooling (ms)"),
    # The other half of VOD's 5 s: how long a callback's body may take to arrive. The upper bound
    # catches milliseconds written where seconds are meant.
    Setting("RECEIVER_BODY_TIMEOUT", seconds(0, 30), 2.0, "2",
            "longest time a callback's body may take to arrive (seconds)"),
    Setting("RECEIVER_SPOOL_DRAIN_INTERVAL", whole_number(0, 86_400), 10, "10",
            "seconds between automatic spool drains in each serving worker; 0 turns them off"),
    Setting("RECEIVER_BIND", bind_address, "127.0.0.1:8000", "0.0.0.0:8000",
            "address gunicorn listens on", scope="server"),
    Setting("RECEIVER_WORKERS", whole_number(1, 64), _default_workers, "4",
            "gunicorn worker processes (gevent: each serves many requests at once)", scope="server"),
    # Secrets: none has a default, and each is optional (unset = that check is off).
    Setting("RECEIVER_CALLBACK_TOKENS", callback_tokens, (), _GENERATE,
            "comma-separated secret URL tokens", secret=True),
    Setting("VOD_SIGN_KEYS", text_list, (), "MySignKey2026",
            "comma-separated VOD SignKeys", secret=True),
    Setting("RECEIVER_SIGN_CLOCK_SKEW", whole_number(0, 86_400), DEFAULT_SIGN_CLOCK_SKEW, "300",
            "seconds past T a signature is still accepted"),
    Setting("RECEIVER_ALLOWED_CIDRS", networks, (), "10.0.0.0/8,203.0.113.7",
            "comma-separated addresses or CIDR networks allowed to post callbacks"),
    # Bearer tokens for the read-only admin API, comma-separated so a new one can be added before
    # the old one is removed. Unset: the admin API does not exist (404), never open.
    Setting("RECEIVER_ADMIN_TOKENS", text_list, (), _GENERATE,
            "comma-separated bearer tokens for /admin/api/v1/", secret=True),
    Setting("RECEIVER_LOG_FORMAT", one_of("auto", "json", "text"), "auto", "json",
            "json, text, or auto (text when stderr is a terminal)"),
    # Read by prometheus_client itself; gunicorn_conf sets it to a fresh folder. Set, the metrics
    # are summed over every worker process; unset, each app counts on its own.
    Setting("PROMETHEUS_MULTIPROC_DIR", folder, None, "/run/vod-receiver/metrics",
            "where prometheus_client sums the workers' metrics"),
    # The application's handlers (receiver/handlers), imported by `vod-receiver work` at start.
    Setting("RECEIVER_HANDLERS", text, "",
            "NewFileUpload=myapp.hooks:video_uploaded,*=myapp.hooks:log_all",
            "EventType=module:function (or a module to import), comma-separated; * for every type"),
    Setting("RECEIVER_HANDLER_MAX_ATTEMPTS", whole_number(1, 1000), 5, "5",
            "attempts before an event's failing handlers make it dead"),
    Setting("RECEIVER_HANDLER_TIMEOUT", seconds(0, 86_400), 60.0, "60",
            "seconds a handler may run before it is stopped and counted as failed"),
    # Retry n waits between half and all of min(MAX, BACKOFF * 2^(n-1)) seconds.
    Setting("RECEIVER_HANDLER_BACKOFF", seconds(0, 86_400), 10.0, "10",
            "seconds before the first retry; doubled for each later one"),
    Setting("RECEIVER_HANDLER_BACKOFF_MAX", seconds(0, 30 * 86_400), 3600.0, "3600",
            "longest wait between two attempts (seconds)"),
    # How often an idle worker looks for new events without a NOTIFY (always, on SQLite).
    Setting("RECEIVER_HANDLER_POLL_INTERVAL", seconds(0, 3600), 1.0, "1",
            "seconds between an idle worker's looks for new events"),
    Setting("RECEIVER_WORKER_METRICS_BIND", bind_address, None, "127.0.0.1:9101",
            "where `vod-receiver work` serves its own /metrics; unset: nowhere"),
    # Talking to Tencent (receiver/vod): read by `upload`, `uploads reconcile` and the like, not
    # by the receiver. The key is a secret with no default; endpoints point at an emulator.
    Setting("TENCENTCLOUD_SECRET_ID", text, None, "AKIDemulator", "the VOD API key's SecretId",
            secret=True, scope="vod"),
    Setting("TENCENTCLOUD_SECRET_KEY", text, None, "emulator-secret", "the VOD API key's SecretKey",
            secret=True, scope="vod"),
    Setting("TENCENTCLOUD_SESSION_TOKEN", text, None, "token", "a temporary API key's token",
            secret=True, scope="vod"),
    Setting("VOD_API_ENDPOINT", text, None, "127.0.0.1:8765", "VOD API host to use instead of Tencent's",
            scope="vod"),
    Setting("VOD_COS_ENDPOINT", text, None, "http://127.0.0.1:8765", "COS URL to use instead of Tencent's",
            scope="vod"),
    Setting("VOD_REGION", text, "ap-guangzhou", "ap-guangzhou", "the VOD API's region", scope="vod"),
    Setting("VOD_SUB_APP_ID", whole_number(1, 2**63 - 1), None, "1500000000", "the VOD application",
            scope="vod"),
    Setting("VOD_UPLOAD_PART_SIZE_MB", whole_number(1, 5120), 8, "8",
            "one PUT up to this size, else parts of it (MB)", scope="vod"),
    Setting("VOD_UPLOAD_THREADS", whole_number(1, 64), 4, "4", "upload parts sent at once", scope="vod"),
    Setting("RECEIVER_BENCH_POSTGRES_URL", database_url, None,
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
            "benchmark only: a PostgreSQL server for make bench", secret=True, scope="bench"),
    Setting("RECEIVER_SAMPLES_DIR", folder, None, "receiver/samples",
            "benchmark only: the folder of sample bodies", scope="bench"),
    Setting("RECEIVER_PULL_TEST_KILL_AT", one_of("after-commit"), None, "after-commit",
            "tests only: where the pull consumer kills itself", scope="tests"),
    Setting("RECEIVER_TEST_DATABASE_URL", database_url, None,
            "postgresql+psycopg://postgres@127.0.0.1:5432/test",
            "tests only: the PostgreSQL server of the suite's PostgreSQL half", secret=True,
            scope="tests"),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}


def from_env(environ=None):
    """The app's settings as the environment gives them: text, or None where unset.

    check() turns them into values. Values that depend on the Flask instance folder (the
    default database and spool) stay None until create_app fills them in.
    """
    environ = os.environ if environ is None else environ
    return {s.name: environ.get(s.name) for s in SETTINGS if s.scope == "app"}


def check(config):
    """Parse and check every app setting in `config` in place; ConfigError on the first bad one."""
    for setting in SETTINGS:
        if setting.scope == "app":
            config[setting.name] = setting.read(config.get(setting.name))


def value(name, environ=None):
    """The checked value of the setting `name` from the environment."""
    environ = os.environ if environ is None else environ
    return BY_NAME[name].read(environ.get(name))


def check_environment(environ=None):
    """Check every app and server setting the environment holds; ConfigError on the first bad one."""
    environ = os.environ if environ is None else environ
    check(from_env(environ))
    for setting in SETTINGS:
        if setting.scope == "server":
            setting.read(environ.get(setting.name))


def unknown(environ=None):
    """A warning for each variable that is not a setting but looks like one, naming the nearest."""
    environ = os.environ if environ is None else environ
    names = list(BY_NAME)
    warnings = []
    for variable in sorted(environ):
        if variable in BY_NAME:
            continue
        # A misspelt prefix (RECIEVER_) is caught by closeness, a wrong ending by the prefix.
        near = difflib.get_close_matches(variable, names, n=1, cutoff=0.8)
        if not near and not variable.startswith(PREFIXES):
            continue
        near = near or difflib.get_close_matches(variable, names, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near else " (see the README's configuration table)"
        warnings.append(f"{variable} is not a vod-receiver setting and is ignored{hint}")
    return warnings


def tokens_from_env():
    """RECEIVER_CALLBACK_TOKENS as a tuple, for code that runs outside the app (gunicorn's logger)."""
    return text_list(os.environ.get("RECEIVER_CALLBACK_TOKENS", ""))
