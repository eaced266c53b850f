"""The two request signatures VOD's clients make, pure: API 3.0's TC3-HMAC-SHA256 and COS's q-sign.

The emulator recomputes what the client should have sent and compares; no Flask, no state, so
each is tested against a published test vector or the SDK's own signer.
"""
import hashlib
import hmac
from datetime import datetime, timezone
from urllib.parse import quote

TC3_ALGORITHM = "TC3-HMAC-SHA256"


def tc3_date(timestamp: int) -> str:
    """The UTC date (YYYY-MM-DD) a TC3 credential scope names for `timestamp`."""
    return datetime.fromtimestamp(int(timestamp), timezone.utc).strftime("%Y-%m-%d")


def tc3_canonical_request(method: str, query: str, headers, payload: bytes) -> str:
    """TC3's CanonicalRequest; `headers` are the signed (name, value) pairs, e.g. content-type and host.

    The URI is always `/`; names and values are lower-cased and trimmed, names sorted, as the
    API 3.0 signing guide says (the SDK signs `content-type;host`, already in that form).
    """
    pairs = sorted((name.strip().lower(), value.strip().lower()) for name, value in headers)
    return "\n".join([
        method.upper(), "/", query,
        "".join(f"{name}:{value}\n" for name, value in pairs), ";".join(name for name, _ in pairs),
        hashlib.sha256(payload).hexdigest(),
    ])


def tc3_signature(secret_key: str, service: str, timestamp: int, canonical_request: str) -> str:
    """The hex TC3-HMAC-SHA256 signature of `canonical_request` (vod-spec §7.5)."""
    date = tc3_date(timestamp)
    string_to_sign = "\n".join([
        TC3_ALGORITHM, str(timestamp), f"{date}/{service}/tc3_request",
        hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
    ])
    key = _hmac256(f"TC3{secret_key}".encode("utf-8"), date)
    key = _hmac256(_hmac256(key, service), "tc3_request")
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def parse_tc3_authorization(value: str) -> dict | None:
    """`Credential`, `SignedHeaders` and `Signature` of a TC3 Authorization header, or None."""
    algorithm, _, rest = (value or "").partition(" ")
    if algorithm != TC3_ALGORITHM:
        return None
    fields = {}
    for item in rest.split(","):
        name, sep, field = item.strip().partition("=")
        if sep:
            fields[name] = field
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    return fields


def cos_encode(value) -> str:
    """How COS's q-sign encodes a header or parameter: UTF-8, everything but `-_.~` escaped."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return quote(str(value).encode("utf-8"), safe="-_.~")


def cos_signature(secret_key: str, key_time: str, method: str, path: str,
                  params: dict[str, str], headers: dict[str, str]) -> str:
    """The hex q-signature COS expects: HMAC-SHA1 over the request's canonical form.

    `params` and `headers` map the lower-case names listed in q-url-param-list and
    q-header-list to their values as sent (they are encoded here); `path` is the decoded key
    with its leading `/`.
    """
    def _join(items):
        pairs = {cos_encode(k).lower(): cos_encode(v) for k, v in items.items()}
        return "&".join(f"{k}={v}" for k, v in sorted(pairs.items()))

    http_string = f"{method.lower()}\n{path}\n{_join(params)}\n{_join(headers)}\n"
    string_to_sign = f"sha1\n{key_time}\n{hashlib.sha1(http_string.encode('utf-8')).hexdigest()}\n"
    sign_key = hmac.new(secret_key.encode("utf-8"), key_time.encode("utf-8"), hashlib.sha1).hexdigest()
    return hmac.new(sign_key.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).hexdigest()


def parse_cos_authorization(value: str) -> dict | None:
    """The q-* fields of a COS Authorization header, or None when one is missing."""
    fields = {}
    for item in (value or "").split("&"):
        name, sep, field = item.partition("=")
        if sep:
            fields[name] = field
    needed = {"q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-header-list",
              "q-url-param-list", "q-signature"}
    return fields if needed <= fields.keys() else None


def _hmac256(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()
