"""Callback authenticity, pure: URL tokens, VOD SignKey signatures, the address allowlist, redaction.

No Flask, no database: callbacks.py feeds these the request's parts and records what they refuse.
See ../shared/vod-spec.md §4 for what VOD documents (and does not) about SignKey.
"""
import hashlib
import hmac
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .events import Refusal

REDACTED = "[redacted]"
# A URL token is one path segment; unreserved URL characters only, so it survives every proxy
# and log format unchanged, and long enough that guessing it over HTTP is hopeless.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,200}")
# T is a Unix time in whole seconds; 20 digits bound what we parse from an untrusted body.
_EXPIRY = re.compile(r"[0-9]{1,20}")
# Where a token or signature shows up in text we keep or log: the path segment after
# /callbacks/vod/ (and anything after it) and credential-like query parameters.
_TOKEN_IN_PATH = re.compile(r"(/callbacks/vod/)[^?#\s\"']+")
_SECRET_IN_QUERY = re.compile(
    r"((?:^|[?&;\s])(?:sign|signature|token|access_token|key|secret|password)=)[^&;#\s\"']*", re.I
)


def token_matches(presented: str | None, tokens) -> bool:
    """Whether `presented` is one of `tokens`, comparing in constant time."""
    if presented is None:
        return False
    candidate = presented.encode("utf-8", "surrogatepass")
    matched = False
    for token in tokens:  # no early exit: the time taken says nothing about which token is near
        matched |= hmac.compare_digest(candidate, token.encode())
    return matched


def sign(key: str, expiry) -> str:
    """VOD's callback signature: the hex MD5 of the SignKey followed by T in decimal."""
    return hashlib.md5(f"{key}{expiry}".encode()).hexdigest()


@dataclass(frozen=True)
class Signature:
    """The Sign and T a callback carried, as sent, and where they were found."""

    sign: Any
    expiry: Any
    where: str  # "body" or "query"


def find_signature(document, query: Mapping[str, str]) -> Signature | None:
    """Sign and T from the body's top-level fields, else from the query (Sign/T or sign/t).

    VOD does not document where it puts them (vod-spec §4, §11): public receivers read either.
    When the body has either field the body is authoritative, so a query cannot override it.
    """
    if isinstance(document, dict) and ("Sign" in document or "T" in document):
        return Signature(document.get("Sign"), document.get("T"), "body")
    value = _first(query, "Sign", "sign")
    expiry = _first(query, "T", "t")
    if value is None and expiry is None:
        return None
    return Signature(value, expiry, "query")


def check_signature(signature: Signature | None, keys, now: float, clock_skew: int) -> Refusal | None:
    """Why a callback's signature is refused (missing, invalid or expired), or None if it is good.

    A signature is checked before its expiry, so `signature_expired` is only said of a genuine
    signature (a late retry or a replay), never of a forgery.
    """
    if signature is None or _blank(signature.sign) or _blank(signature.expiry):
        where = signature.where if signature else None
        return Refusal("signature_missing",
                       "The callback carries no Sign and T: VOD_SIGN_KEYS requires both, as "
                       "top-level body fields or query parameters.",
                       status=401, details={"found_in": where} if where else None)
    details = {"found_in": signature.where}
    expiry_text = _expiry_text(signature.expiry)
    if expiry_text is None:
        return Refusal("signature_invalid", "T must be a Unix time in whole seconds.",
                       status=401, details=details)
    if not isinstance(signature.sign, str):
        return Refusal("signature_invalid", "Sign must be a string.", status=401, details=details)
    presented = signature.sign.lower().encode("utf-8", "surrogatepass")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, sign(key, expiry_text).encode())
    if not matched:
        return Refusal("signature_invalid", "Sign is not MD5(SignKey + T) for any key in VOD_SIGN_KEYS.",
                       status=401, details=details)
    expiry = int(expiry_text)
    if now > expiry + clock_skew:
        return Refusal("signature_expired",
                       f"The signature expired {int(now - expiry)} s ago (T={expiry}); "
                       f"RECEIVER_SIGN_CLOCK_SKEW allows {clock_skew} s.",
                       status=401, details={**details, "T": expiry, "now": int(now),
                                            "clock_skew": clock_skew})
    return None


def parse_networks(items) -> tuple:
    """The allowlist as ip_network objects; ValueError naming the entry that is not a network."""
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or CIDR network ({exc})") from None
    return tuple(networks)


def address_allowed(address: str | None, networks) -> bool:
    """Whether `address` (as a proxy or the socket gave it) lies in one of `networks`."""
    ip = _ip(address)
    return ip is not None and any(ip.version == net.version and ip in net for net in networks)


def redact(text: str, secrets=()) -> str:
    """`text` with URL tokens, credential query values and every string in `secrets` replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    # Most texts (header values) hold neither: the substring tests spare them the regexes.
    if "/callbacks/vod/" in text:
        text = _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}", text)
    if "=" in text:
        text = _SECRET_IN_QUERY.sub(rf"\g<1>{REDACTED}", text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts tokens and signatures from every message it passes."""

    def __init__(self, secrets=()):
        super().__init__()
        self.secrets = set(secrets)

    def filter(self, record):
        message = record.getMessage()
        redacted = redact(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _first(query, *names):
    for name in names:
        value = query.get(name)
        if value is not None:
            return value
    return None


def _blank(value):
    return value is None or value == ""


def _expiry_text(value):
    # T as VOD hashed it: the decimal digits of an int64. A JSON number arrives as int; a
    # query parameter (or a quoted body field) as text, which is hashed exactly as sent.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if 0 <= value < 10**20 else None
    if isinstance(value, str) and _EXPIRY.fullmatch(value):
        return value
    return None


def _ip(address):
    if not isinstance(address, str):
        return None
    address = address.strip()
    # Some proxies append the client's port: "1.2.3.4:5678" or "[2001:db8::1]:5678".
    if address.startswith("["):
        address = address[1:].partition("]")[0]
    elif address.count(":") == 1:
        address = address.partition(":")[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d.
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip
