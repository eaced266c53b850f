"""Blueprint for VOD's callback URL: read raw -> authenticate -> ingest (store or spool) -> 200 {}."""
import logging
import re
import threading
from functools import lru_cache

from flask import Blueprint, current_app, request
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.http import parse_list_header

from . import auth, bodytimeout, events, spool, store
from .auth import REDACTED
from .events import Refusal
from .ingest import ingest
from .telemetry import observe

bp = Blueprint("callbacks", __name__)
log = logging.getLogger(__name__)

SECRET_HEADER = re.compile(r"authorization|cookie|token|secret|sign|password|api-?key", re.I)
PREFIX = "/callbacks/"
_drainer_lock = threading.Lock()
_log_filter = auth.RedactingFilter()


# OPTIONS is not answered automatically: every request under /callbacks/ is recorded.
@bp.post("/callbacks/vod", provide_automatic_options=False)
@bp.post("/callbacks/vod/<token>", provide_automatic_options=False)
def receive(token=None):
    """Receive one VOD callback (v3 or legacy v2) and store it before answering."""
    # The app's settings and the request, looked up once rather than through the proxies.
    config, req = current_app.config, request._get_current_object()
    delivery, too_large = read_delivery(config, req)
    # Cheapest and least revealing first: who is asking, with which token, how much, then
    # the signature (which needs the body).
    refusal = (_refuse_address(config, req) or _refuse_token(config, token) or too_large
               or _refuse_signature(config, req, delivery))
    verdict, outcome = ingest(delivery, refusal)
    observe(delivery, verdict, outcome)
    if isinstance(verdict, Refusal):
        raise verdict
    # VOD ignores the answer (vod-spec §4); {} is what its docs show.
    return {}


def read_delivery(config, req, channel="push"):
    """The request as a Delivery, reading at most the body limit within the body timeout (a
    larger or slower body is refused with what arrived)."""
    limit, secrets = config["RECEIVER_MAX_BODY_BYTES"], config["RECEIVER_CALLBACK_TOKENS"]
    declared = req.content_length
    cutoff = bodytimeout.start(req.environ, config["RECEIVER_BODY_TIMEOUT"])
    try:
        body = req.stream.read(limit + 1)
    except Exception:
        if cutoff is None or not cutoff.stop():
            raise
        body, late = b"", True  # the stream gave up when its read side was shut (chunked)
    else:
        # Cut after the last byte needed arrived is not late: only a body short of it is.
        late = (cutoff is not None and cutoff.stop()
                and (declared is None or len(body) < min(declared, limit + 1)))
    too_large = len(body) > limit or (declared is not None and declared > limit)
    query = req.query_string.decode("utf-8", "backslashreplace")
    delivery = store.Delivery(
        body=body[:limit],
        channel=channel,
        content_type=_text(req.content_type),
        remote_addr=_text(req.remote_addr),
        headers=redact_headers(req.headers, secrets),
        method=_text(req.method)[:16],
        # The path carries the URL token and the query may carry Sign: both are redacted.
        path=auth.redact(_text(req.path + (f"?{query}" if query else "")), secrets),
        body_truncated=too_large or late,
    )
    refusal = None
    if late:
        # 408, and the connection is closed: the rest of the body may still be on its way.
        seconds = config["RECEIVER_BODY_TIMEOUT"]
        refusal = Refusal("body_timeout", f"The body did not arrive within RECEIVER_BODY_TIMEOUT "
                          f"({seconds:g} s); {len(body)} bytes had.", status=408,
                          details={"timeout": seconds, "received": len(body),
                                   "content_length": declared},
                          headers={"Connection": "close"})
    elif too_large:
        refusal = Refusal("body_too_large", f"The body is larger than the limit of {limit} bytes.",
                          status=413, details={"limit": limit, "content_length": declared})
    return delivery, refusal


def redact_headers(headers, secrets=()):
    """Request headers as a dict, with credentials, tokens and signatures replaced."""
    return {_text(k): REDACTED if _secret_header(k) else auth.redact(_text(v), secrets)
            for k, v in headers.items()}


@lru_cache(maxsize=256)  # the same few header names arrive with every callback
def _secret_header(name):
    return SECRET_HEADER.search(name) is not None


def redact_logs(app):
    """Keep the app's tokens (and any URL token or Sign) out of Flask's and werkzeug's logs."""
    _log_filter.secrets.update(app.config["RECEIVER_CALLBACK_TOKENS"])
    for logger in (app.logger, logging.getLogger("werkzeug")):
        if _log_filter not in logger.filters:
            logger.addFilter(_log_filter)


def _refuse_address(config, req):
    networks = config["RECEIVER_ALLOWED_CIDRS"]
    if not networks:
        return None
    hops = config["RECEIVER_TRUSTED_PROXIES"]
    # ProxyFix took the address `hops` entries from the right of X-Forwarded-For; with fewer
    # entries it left the nearest proxy's own address, which must not pass for the client's.
    forwarded = parse_list_header(req.environ.get("HTTP_X_FORWARDED_FOR") or "")
    if hops and (len(forwarded) < hops or not forwarded[-hops]):
        return Refusal("ip_not_allowed", f"The client address is unknown: X-Forwarded-For has fewer "
                       f"than RECEIVER_TRUSTED_PROXIES={hops} entries.", status=403,
                       details={"forwarded_for_entries": len(forwarded), "trusted_proxies": hops})
    if auth.address_allowed(req.remote_addr, networks):
        return None
    return Refusal("ip_not_allowed", "The client address is outside RECEIVER_ALLOWED_CIDRS.",
                   status=403, details={"remote_addr": _text(str(req.remote_addr))})


def _refuse_token(config, token):
    tokens = config["RECEIVER_CALLBACK_TOKENS"]
    if not tokens:
        if token is None:
            return None
        return Refusal("not_found", f"No callback tokens are configured; {_callback_url()}.", status=404)
    if token is None:
        return Refusal("token_missing", f"This receiver requires a token; {_callback_url()}.",
                       status=401)
    if not auth.token_matches(token, tokens):
        return Refusal("token_invalid", "The callback URL's token is not one of "
                       "RECEIVER_CALLBACK_TOKENS.", status=401)
    return None


def _refuse_signature(config, req, delivery):
    keys = config["VOD_SIGN_KEYS"]
    if not keys:
        return None
    # A body that is not a JSON object can still be signed in the query; if it is, parsing
    # refuses it next with the precise reason.
    try:
        document = events.decode_json(delivery.body)
    except Refusal:
        document = None
    return auth.check_signature(auth.find_signature(document, req.args), keys,
                                now=delivery.received_at.timestamp(),
                                clock_skew=config["RECEIVER_SIGN_CLOCK_SKEW"])


def _callback_url():
    if current_app.config["RECEIVER_CALLBACK_TOKENS"]:
        return "callbacks are received by POST at /callbacks/vod/<token>"
    return "callbacks are received by POST at /callbacks/vod"


@bp.before_app_request
def _start_spool_drainer():
    # Started on the first request, so only serving processes drain (not CLI commands),
    # and in each gunicorn worker after the fork.
    app = current_app._get_current_object()
    if "receiver.drainer" not in app.extensions:
        with _drainer_lock:
            if "receiver.drainer" not in app.extensions:
                app.extensions["receiver.drainer"] = spool.start_drainer(app)


@bp.before_app_request
def _refuse_unrouted():
    # A wrong method or path under /callbacks/ may still be VOD (a mistyped callback URL) or
    # someone probing: record it like any refusal instead of letting routing answer unseen.
    # Other paths are not callbacks and get the plain 404.
    req = request._get_current_object()
    failure = req.routing_exception
    if failure is None or not req.path.startswith(PREFIX):
        return
    config = current_app.config
    delivery, _too_large = read_delivery(config, req)
    if isinstance(failure, MethodNotAllowed):
        refusal = Refusal("method_not_allowed", "Callbacks are accepted by POST only.",
                          status=405, headers={"Allow": "POST"})
    else:  # not found, or a redirect to a path with merged slashes: neither is the callback URL
        refusal = Refusal("not_found", f"Nothing receives callbacks at this path; {_callback_url()}.",
                          status=404)
    verdict, outcome = ingest(delivery, _refuse_address(config, req) or refusal)
    observe(delivery, verdict, outcome)
    raise verdict


def _text(value):
    # Header values and paths can carry bytes PostgreSQL cannot store in text (ASCII has no
    # lone surrogates, so it only needs the NUL check).
    if value is None:
        return None
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value.replace("\x00", "\\x00")
