"""The operator page's sign-in: a signed cookie naming a random session and the token it was
opened with, and the CSRF token derived from that session. No Flask session, no new setting.

The signing secret is derived from RECEIVER_ADMIN_TOKENS, so every gunicorn worker (and host)
with the same configuration agrees on it, and changing the tokens signs every session out. Each
session also carries a fingerprint of its token, checked against the configured tokens on every
request: a session never outlives its token.
"""
import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "vodr_admin"
MAX_AGE = 12 * 3600  # seconds: a working day, then sign in again
_LABEL = b"vod-receiver operator page session v1\0"


def secret(tokens) -> bytes:
    """The signing secret of the configured admin `tokens` (order does not matter)."""
    return hashlib.sha256(_LABEL + b"\0".join(t.encode() for t in sorted(tokens))).digest()


def fingerprint(key: bytes, token: str) -> str:
    """A short keyed fingerprint of `token`: names it in the cookie without revealing it."""
    return hmac.new(key, b"token\0" + token.encode(), hashlib.sha256).hexdigest()[:16]


def open_session(tokens, token) -> str:
    """The cookie value of a new session opened with `token` (one of `tokens`)."""
    key = secret(tokens)
    return _serializer(key).dumps({"sid": secrets.token_urlsafe(16), "tok": fingerprint(key, token)})


def session_id(tokens, cookie) -> str | None:
    """The session id in `cookie` if it is ours, under 12 hours old and its token still
    configured; else None."""
    if not cookie or not tokens:
        return None
    key = secret(tokens)
    try:
        data = _serializer(key).loads(cookie, max_age=MAX_AGE)
    except BadSignature:  # SignatureExpired is one too
        return None
    if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
        return None
    fingerprints = {fingerprint(key, token) for token in tokens}
    return data["sid"] if data.get("tok") in fingerprints else None


def csrf_token(tokens, sid) -> str:
    """The CSRF token of session `sid`: every form of the page carries it."""
    return hmac.new(secret(tokens), b"csrf\0" + sid.encode(), hashlib.sha256).hexdigest()


def csrf_ok(tokens, sid, given) -> bool:
    """Whether `given` is the CSRF token of session `sid`, compared in constant time."""
    if not sid or not isinstance(given, str):
        return False
    return hmac.compare_digest(csrf_token(tokens, sid).encode(), given.encode())


def _serializer(key):
    return URLSafeTimedSerializer(key, salt="vodr-admin-session")
