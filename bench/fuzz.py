"""Fuzz the callback endpoint and check its ledger: no 500, every request accounted for.

Throws mutated sample callbacks, random bodies, headers, methods, paths, query strings and
wrong, expired or missing credentials at the app (Flask's test client, a real migrated
database) with every authenticity check switched on, then asserts:

* no answer is a 5xx;
* the ledger balances: requests sent under /callbacks/ = sum(events.delivery_count)
  + count(rejections), with nothing left in the spool;
* every valid callback (right token, allowed address, good signature, a sample intact but for
  fields that are not identity) gets 200;
* no URL token appears in any stored row.

Run from the checkout (exit status 1 when any check fails):

    python -m bench.fuzz --requests 5000                       # a temporary SQLite file
    python -m bench.fuzz --requests 5000 --database-url postgresql+psycopg://postgres@127.0.0.1:5432/fuzz

A --database-url is migrated and written to: give it a scratch database. Counts are taken as
differences, so rows already there do not upset the ledger.
"""
import argparse
import collections
import copy
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from receiver import auth

TOKENS = ("fuzz-token-current-0123456789abcdef", "fuzz-token-previous-0123456789abcdef")
SIGN_KEYS = ("FuzzKeyCurrent42", "FuzzKeyPrevious7")
ALLOWED_CIDRS = "10.0.0.0/8,2001:db8::/32"
CLOCK_SKEW = 300
LEDGER_PREFIX = "/callbacks/"
# A NewFileUpload in case no sample folder is at hand (vod-spec §2).
FALLBACK_SAMPLE = {
    "EventType": "NewFileUpload",
    "FileUploadEvent": {
        "FileId": "5285485487985271487",
        "MediaBasicInfo": {"Name": "demo", "CreateTime": "2019-07-16T06:25:18Z", "Type": "mp4",
                           "MediaUrl": "http://example.vod2.myqcloud.com/demo.mp4",
                           "SourceInfo": {"SourceType": "Upload", "SourceContext": ""}},
        "MetaData": {"Size": 2, "Duration": 1.5, "Width": 640, "Height": 480},
    },
}
ID_KEYS = {"FileId", "TaskId", "fileId", "vodTaskId", "ProcedureTaskId", "procedureTaskId"}
# What may refuse a body with the right credentials: the event type, the data object and the
# fields of the dedup key (README, "What is stored"). A mutation anywhere else inside the event
# data must still be accepted; FileId is counted here wherever it appears, to stay on the safe side.
IDENTITY_KEYS = {"FileId", "TaskId", "FileIdSet", "fileId", "vodTaskId", "fileInfo"}
DATES = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2018-13-45T25:61:61Z", "",
         "now", "2024-01-01T00:00:00", "2024-02-30T00:00:00Z", "+275760-09-13T00:00:00Z"]
STRINGS = ["", "\x00", "a\x00b", "\ud800", "\udfff x", "é", "😀" * 40, "\u202e", "%00", "'; DROP TABLE",
           "NewFileUpload", "x" * 257, "x" * 1001, "1" * 65, "\\", '"', "\n\r\t"]
CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=zz",
                 "application/json; charset=utf-16", "\x7f\xff garbage", "a" * 3000]
METHODS = ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "post",
           "PROPFIND", "X" * 40, "M\x00"]
OTHER_PATHS = ["/", "/admin", "/admin/events", "/callback/vod", "/callbacksvod", "/callbacks",
               "/favicon.ico", "/vod/callbacks"]


@dataclass
class Case:
    """One request to send, and whether it is a valid callback that must get 200."""

    method: str
    path: str  # with the query string
    headers: dict
    body: bytes
    valid: bool
    kinds: list = field(default_factory=list)

    @property
    def ledgered(self):
        """Whether the app must record this request (event or rejection)."""
        return self.path.startswith(LEDGER_PREFIX)


def fuzz_config(database_url, spool_dir, max_body_bytes=1024 * 1024):
    """The receiver's settings for fuzzing: every authenticity check on."""
    return {
        "TESTING": True,
        "RECEIVER_DATABASE_URL": database_url,
        "RECEIVER_SPOOL_DIR": str(spool_dir),
        "RECEIVER_SPOOL_DRAIN_INTERVAL": 0,
        "RECEIVER_MAX_BODY_BYTES": max_body_bytes,
        "RECEIVER_CALLBACK_TOKENS": ",".join(TOKENS),
        "VOD_SIGN_KEYS": ",".join(SIGN_KEYS),
        "RECEIVER_SIGN_CLOCK_SKEW": CLOCK_SKEW,
        "RECEIVER_ALLOWED_CIDRS": ALLOWED_CIDRS,
        "RECEIVER_TRUSTED_PROXIES": 1,
    }


def load_samples(folder=None):
    """The callback bodies (v3 push and v2) in `folder`, or the samples shipped in the package."""
    from receiver.samples import FOLDER

    candidates = [folder or FOLDER]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            files = sorted(p for p in Path(candidate).glob("*.json")
                           if p.name.startswith(("v3-push-", "v2-")))
            if files:
                return [json.loads(p.read_bytes()) for p in files]
    if folder:
        raise SystemExit(f"no v3-push-*.json or v2-*.json samples in {folder}")
    return [FALLBACK_SAMPLE]


class Fuzzer:
    """Makes Cases from a random.Random (or hypothesis' st.randoms(), which shrinks them)."""

    def __init__(self, rng, samples, max_body_bytes=1024 * 1024, now=time.time):
        self.rng = rng
        self.samples = samples
        self.max_body_bytes = max_body_bytes
        self.now = now

    def case(self):
        """One request: valid unless one or more mutations were applied."""
        rng = self.rng
        kinds = []
        document = copy.deepcopy(rng.choice(self.samples))
        if rng.random() < 0.6:
            self._fresh_ids(document)  # else a re-delivery: a counted duplicate
        now = int(self.now())
        credentials = {
            "token": rng.choice(TOKENS),
            "key": rng.choice(SIGN_KEYS),
            "where": rng.choice(["body", "body-text-T", "query-Sign", "query-sign"]),
            # Fresh, or a little late but inside the clock-skew allowance.
            "expiry": now + rng.randint(1, 600) if rng.random() < 0.8
            else now - rng.randint(0, CLOCK_SKEW - 30),
            "upper": rng.random() < 0.2,
            "forwarded_for": self._allowed_client(),
        }
        method, path_form, extra_query = "POST", "token", []
        headers = self._noise_headers()

        if rng.random() < 0.25:
            kinds.append(self._break_credentials(credentials))
        lenient = []  # mutations a valid callback may carry: odd fields that are not identity
        if rng.random() < 0.3:
            document, kind, keeps_valid = self._mutate_document(document)
            (lenient if keeps_valid else kinds).append(kind)
        if rng.random() < 0.12:
            method = rng.choice(METHODS)
            kinds.append(f"method:{method[:10]!r}")
        if rng.random() < 0.08:
            path_form = rng.choice(["trailing-slash", "double-slash", "extra-segment", "other-callback",
                                    "bare-prefix", "nul-segment", "case", "elsewhere"])
            kinds.append(f"path:{path_form}")
        if rng.random() < 0.08:
            extra_query = self._garbage_query()
            kinds.append("query:garbage")

        body = self._sign_and_serialize(document, credentials)
        if rng.random() < 0.25:
            body, kind = self._mutate_bytes(body, document)
            kinds.append(kind)
        query = self._query(credentials) + extra_query
        if credentials["forwarded_for"] is not None:
            headers["X-Forwarded-For"] = credentials["forwarded_for"]
        path = self._path(path_form, credentials["token"])
        if query:
            path += "?" + "&".join(query)
        return Case(method, path, headers, body, valid=not kinds, kinds=kinds + lenient)

    # --- the valid request and its credentials ---------------------------------------------

    def _fresh_ids(self, value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ID_KEYS and isinstance(item, str):
                    value[key] = self._id_like(item)
                elif key in ("FileIdSet",) and isinstance(item, list):
                    value[key] = [self._id_like(str(i)) for i in item]
                else:
                    self._fresh_ids(item)
        elif isinstance(value, list):
            for item in value:
                self._fresh_ids(item)

    def _id_like(self, original):
        digits = "".join(str(self.rng.randint(0, 9)) for _ in range(12))
        return (original[:-12] + digits) if len(original) > 12 else digits

    def _allowed_client(self):
        client = self.rng.choice([f"10.{self.rng.randint(0, 255)}.0.{self.rng.randint(1, 254)}",
                                  "2001:db8::1", "::ffff:10.1.2.3", "10.9.8.7:51234"])
        # The proxy appends what it saw; whatever the client claimed comes first.
        return self.rng.choice([client, f"203.0.113.7, {client}", f"unknown, 10.0.0.1, {client}"])

    def _sign_and_serialize(self, document, credentials):
        expiry, where = credentials["expiry"], credentials["where"]
        signature = self._signature(credentials)
        if where.startswith("body") and isinstance(document, dict):
            if signature is not None:
                document["Sign"] = signature
            if expiry is not None:
                document["T"] = str(expiry) if where == "body-text-T" and isinstance(expiry, int) else expiry
        try:
            return json.dumps(document, ensure_ascii=self.rng.random() < 0.5).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            return json.dumps(document).encode()

    def _signature(self, credentials):
        sign = credentials.get("sign")
        if sign is None and credentials["expiry"] is not None and credentials["key"] is not None:
            sign = auth.sign(credentials["key"], credentials["expiry"])
        if isinstance(sign, str) and credentials["upper"]:
            sign = sign.upper()
        return None if credentials.get("drop_sign") else sign

    def _query(self, credentials):
        where = credentials["where"]
        if not where.startswith("query"):
            return []
        sign = self._signature(credentials)
        expiry = credentials["expiry"]
        names = ("Sign", "T") if where == "query-Sign" else ("sign", "t")
        query = []
        if sign is not None:
            query.append(f"{names[0]}={_quote(str(sign))}")
        if expiry is not None:
            query.append(f"{names[1]}={_quote(str(expiry))}")
        return query

    def _path(self, form, token):
        if token is None and form == "token":
            form = "bare"
        return {
            "token": f"/callbacks/vod/{token}",
            "bare": "/callbacks/vod",
            "trailing-slash": f"/callbacks/vod/{token}/",
            "double-slash": f"/callbacks//vod/{token}",
            "extra-segment": f"/callbacks/vod/{token}/extra",
            "other-callback": "/callbacks/other",
            "bare-prefix": "/callbacks/",
            "nul-segment": "/callbacks/vod/%00%ff",
            "case": f"/Callbacks/VOD/{token}",
            "elsewhere": self.rng.choice(OTHER_PATHS),
        }[form]

    def _noise_headers(self):
        rng = self.rng
        headers = {}
        content_type = rng.choice(CONTENT_TYPES[:4]) if rng.random() < 0.9 else rng.choice(CONTENT_TYPES)
        if content_type is not None:
            headers["Content-Type"] = content_type
        if rng.random() < 0.2:  # where a careless proxy might echo the URL: must be redacted
            token = rng.choice(TOKENS)
            headers[rng.choice(["Referer", "X-Original-URI", "X-Note"])] = \
                rng.choice([f"https://example.com/callbacks/vod/{token}?sign=abc", token])
        if rng.random() < 0.1:
            headers[rng.choice(["Authorization", "Cookie", "X-Callback-Token", "X-Sign"])] = "secret"
        if rng.random() < 0.05:
            headers["X-Huge"] = "h" * rng.randint(1, 16000)
        return headers

    # --- mutations -----------------------------------------------------------------------

    def _break_credentials(self, credentials):
        rng = self.rng
        kind = rng.choice(["token-wrong", "token-missing", "token-garbage", "sign-forged", "sign-wrong-key",
                           "sign-expired", "sign-missing", "sign-only", "t-only", "sign-garbage",
                           "t-garbage", "ip-denied", "ip-spoofed", "xff-missing", "xff-garbage"])
        if kind == "token-wrong":
            credentials["token"] = rng.choice(TOKENS)[:-1] + "X"
        elif kind == "token-missing":
            credentials["token"] = None
        elif kind == "token-garbage":
            credentials["token"] = rng.choice(["%00", "%ff%fe", "a", "x" * 300, "..", "%2e%2e", "tok%20en"])
        elif kind == "sign-forged":
            credentials["sign"] = "".join(rng.choice("0123456789abcdef") for _ in range(32))
        elif kind == "sign-wrong-key":
            credentials["key"] = "NotTheKey"
        elif kind == "sign-expired":
            credentials["expiry"] = int(self.now()) - CLOCK_SKEW - rng.randint(1, 10**8)
        elif kind == "sign-missing":
            credentials["expiry"], credentials["drop_sign"] = None, True
        elif kind == "sign-only":
            credentials["sign"] = auth.sign(credentials["key"], credentials["expiry"])
            credentials["expiry"] = None
        elif kind == "t-only":
            credentials["drop_sign"] = True
        elif kind == "sign-garbage":
            credentials["sign"] = rng.choice([None, 0, 1.5, True, [], {}, "", "x" * 5000, "\x00", "\ud800"])
        elif kind == "t-garbage":
            credentials["expiry"] = rng.choice([-1, 1.5, True, 10**30, "", "abc", " 1", "1e9", [], {},
                                                "9" * 400])
        elif kind == "ip-denied":
            credentials["forwarded_for"] = rng.choice(["198.51.100.7", "2001:db9::1", "11.0.0.1", "::1"])
        elif kind == "ip-spoofed":
            credentials["forwarded_for"] = "10.0.0.1, 198.51.100.7"
        elif kind == "xff-missing":
            credentials["forwarded_for"] = None
        else:
            credentials["forwarded_for"] = rng.choice(["", ",", "unknown", "10.0.0.1/8", "[10.0.0.1]",
                                                       "\x00", "10.0.0.1 , ,", "x" * 2000])
        return f"credentials:{kind}"

    def _mutate_document(self, document):
        rng = self.rng
        kind = rng.choice(["wrong-type", "wrong-type", "remove-key", "huge-number", "odd-string",
                           "date-edge", "event-type", "data-key", "ambiguous-data", "not-object"])
        paths = list(_paths(document))
        target = rng.choice(paths) if paths else None
        data_fields = [path for path in paths if _outside_identity(document, path)]
        if kind == "wrong-type" and target:
            _set(document, target, self._wrong_value())
        elif kind == "remove-key" and target:
            _delete(document, target)
        elif kind == "huge-number" and target:
            _set(document, target, rng.choice([10**rng.randint(10, 4200), -(10**rng.randint(10, 400)),
                                               2**63, 2**63 - 1, -(2**63) - 1, 2**31, 1.7976931348623157e308,
                                               5e-324, -0.0]))
        elif kind == "odd-string" and target:
            text = rng.choice(STRINGS)
            _set(document, target, text)
            # A lone surrogate is sent as bytes that are not UTF-8: the body is refused, not the field.
            kind = kind if _utf8(text) else "odd-string-not-utf8"
        elif kind == "date-edge":
            for path in paths:
                if path[-1] in ("CreateTime", "ExpireTime"):
                    _set(document, path, rng.choice(DATES + [0, 1e20, None]))
        elif kind == "event-type" and isinstance(document, dict):
            key = "EventType" if "EventType" in document else "eventType"
            document[key] = rng.choice(["Bogus", "", None, 7, "NewFileUpload", "FileDeleted",
                                        "ProcedureStateChanged", "x" * 200, "\x00"])
        elif kind == "data-key" and isinstance(document, dict):
            data = next((k for k, v in document.items() if isinstance(v, dict)), None)
            if data is not None:
                document[rng.choice(["k" * 300, "\x00", "\ud800key", "NewKey", "", "FileDeleteEvent"])] = \
                    document.pop(data)
        elif kind == "ambiguous-data" and isinstance(document, dict):
            document["Extra" + str(rng.randint(0, 9))] = {"FileId": "1"}
        elif kind == "not-object":
            document = rng.choice([[], [document], "str", 1, None, True, 1.5])
        keeps_valid = kind == "date-edge" or (
            kind in ("wrong-type", "remove-key", "huge-number", "odd-string") and target in data_fields)
        return document, f"document:{kind}", keeps_valid

    def _wrong_value(self):
        rng = self.rng
        return rng.choice([None, True, False, 0, -1, 1.5, 10**20, "", "str", "\x00", [], [None], {},
                           {"a": {"b": []}}, ["x"] * 20, "x" * rng.randint(0, 3000)])

    def _mutate_bytes(self, body, document):
        rng = self.rng
        kind = rng.choice(["truncated", "invalid-utf8", "bom", "utf16", "duplicate-keys", "deep-nesting",
                           "gigantic", "random-bytes", "empty", "non-json-numbers", "trailing-garbage",
                           "random-json"])
        limit = self.max_body_bytes
        if kind == "truncated":
            body = body[:rng.randint(0, max(0, len(body) - 1))]
        elif kind == "invalid-utf8":
            at = rng.randint(0, len(body))
            junk = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf8\x88\x80\x80\x80"])
            body = body[:at] + junk + body[at:]
        elif kind == "bom":
            body = b"\xef\xbb\xbf" + body
        elif kind == "utf16":
            body = body.decode("utf-8", "replace").encode("utf-16")
        elif kind == "duplicate-keys":  # json keeps the last: before the real key it is harmless
            extra = rng.choice([b'"EventType":"Bogus"', b'"Sign":"00"', b'"T":1', b'"FileUploadEvent":1'])
            if rng.random() < 0.5:
                body = body.replace(b"{", b"{" + extra + b",", 1)
            elif body.endswith(b"}"):
                body = body[:-1] + b"," + extra + b"}"
        elif kind == "deep-nesting":
            depth = rng.choice([50, 900, 1000, 5000, 100000, rng.randint(1, 3000)])
            nest = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            body = b'{"Deep":' + nest[0] * depth + b"1" + nest[1] * depth + b"," + body[1:] \
                if body.startswith(b"{") else nest[0] * depth + nest[1] * depth
        elif kind == "gigantic":
            size = rng.choice([limit - len(body) - 20, limit - len(body) + rng.randint(-50, 50), limit + 1,
                               limit * 2, rng.randint(1, limit)])
            pad = b'"Pad":"' + b"x" * max(0, size) + b'",'
            body = b"{" + pad + body[1:] if body.startswith(b"{") else pad
        elif kind == "random-bytes":
            body = rng.randbytes(rng.randint(1, 2048))
        elif kind == "empty":
            body = rng.choice([b"", b" ", b"\n\t ", b"null", b"{}", b"[]", b'""'])
        elif kind == "non-json-numbers":
            body = body.replace(b"{", rng.choice([b'{"Size":NaN,"Duration":Infinity,', b'{"X":1e999,',
                                                  b'{"X":-Infinity,', b'{"X":' + b"9" * 5000 + b",",
                                                  b'{"X":0x10,', b'{"X":01,']), 1)
        elif kind == "trailing-garbage":
            body = body + rng.choice([b"xyz", b"{}", body, b"\x00", b",", b"]"])
        else:
            body = json.dumps(_random_json(rng, 4)).encode()
        return body, f"bytes:{kind}"

    def _garbage_query(self):
        return [self.rng.choice(["%zz=%%", "sign=", "T=", "t=abc", "Sign=" + "f" * 32, "=", "&&", "a=%00",
                                 "T=1", "sign=%ff", "x=" + "y" * 3000])
                for _ in range(self.rng.randint(1, 4))]


def _quote(text):
    from urllib.parse import quote

    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _random_json(rng, depth):
    kind = rng.randint(0, 6 if depth > 0 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([rng.randint(-(2**70), 2**70), rng.random() * 10**rng.randint(0, 300)])
    if kind in (3, 4):
        return rng.choice(STRINGS + ["EventType", "NewFileUpload", "version", "4.0"])
    if kind == 5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["EventType", "FileUploadEvent", "version", "eventType", "data", "FileId", "T", "Sign",
                        "x"]): _random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def _paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def _utf8(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _outside_identity(document, path):
    """Whether `path` lies inside the event data of `document` and is not identity."""
    if len(path) < 2 or not isinstance(document, dict):
        return False
    from receiver.events import EVENT_TYPES

    data_key = "data" if "eventType" in document else path[0] if path[0] in EVENT_TYPES else None
    return path[0] == data_key and IDENTITY_KEYS.isdisjoint(path)


def _set(document, path, value):
    for step in path[:-1]:
        document = document[step]
    document[path[-1]] = value


def _delete(document, path):
    for step in path[:-1]:
        document = document[step]
    del document[path[-1]]


# --- sending and the ledger -----------------------------------------------------------------


def send(client, case):
    """Send `case` with the test client; returns the response."""
    return client.open(case.path, method=case.method, headers=case.headers, data=case.body)


def ledger(session):
    """What the database holds: events, deliveries counted on them, rejections by reason."""
    from sqlalchemy import func, select

    from receiver.models import Event, Rejection

    events, deliveries = session.execute(
        select(func.count(Event.id), func.coalesce(func.sum(Event.delivery_count), 0))).one()
    reasons = dict(session.execute(select(Rejection.reason, func.count()).group_by(Rejection.reason)).all())
    return {"events": events, "deliveries": int(deliveries), "rejections": sum(reasons.values()),
            "reasons": reasons}


def leaked_tokens(session, tokens=TOKENS, since=(0, 0)):
    """How many stored rows (after the given event/rejection ids) mention one of `tokens`."""
    from sqlalchemy import select

    from receiver.models import Event, Rejection

    leaks = 0
    rows = session.execute(select(Rejection.path, Rejection.headers, Rejection.details, Rejection.message)
                           .where(Rejection.id > since[1])).all()
    rows += session.execute(select(Event.headers).where(Event.id > since[0])).all()
    for row in rows:
        text = json.dumps([*row])
        leaks += any(token in text for token in tokens)
    return leaks


def _max_ids(session):
    from sqlalchemy import func, select

    from receiver.models import Event, Rejection

    return (session.scalar(select(func.coalesce(func.max(Event.id), 0))),
            session.scalar(select(func.coalesce(func.max(Rejection.id), 0))))


def run(database_url, requests, seed, samples, max_body_bytes, out=sys.stdout):
    """Fuzz a migrated database at `database_url`; print the ledger and return the failures."""
    from receiver import create_app, db, spool

    db.upgrade(database_url)
    spool_dir = tempfile.mkdtemp(prefix="vodr-fuzz-spool-")
    app = create_app(fuzz_config(database_url, spool_dir, max_body_bytes))
    client = app.test_client()
    factory = db.session_factory(app)
    fuzzer = Fuzzer(random.Random(seed), samples, max_body_bytes)
    with factory() as session:
        before, since = ledger(session), _max_ids(session)

    statuses, kinds = collections.Counter(), collections.Counter()
    failures = []
    sent = {"ledgered": 0, "other": 0, "valid": 0, "valid_accepted": 0}
    started = time.monotonic()
    for number in range(requests):
        case = fuzzer.case()
        response = send(client, case)
        statuses[response.status_code] += 1
        kinds.update(kind.split(":")[0] for kind in case.kinds or ["valid"])
        sent["ledgered" if case.ledgered else "other"] += 1
        if case.valid:
            sent["valid"] += 1
            sent["valid_accepted"] += response.status_code == 200
        problem = None
        if response.status_code >= 500:
            problem = "5xx answer"
        elif case.valid and response.status_code != 200:
            problem = "valid callback refused"
        if problem and len(failures) < 20:
            failures.append(f"#{number} {problem}: {case.method} {auth.redact(case.path)} kinds={case.kinds} "
                            f"-> {response.status_code} {response.get_data()[:300]!r}")
        elif problem:
            failures.append(problem)
    elapsed = time.monotonic() - started
    spooled = spool.depth(spool_dir)
    if spooled:  # the database was up throughout: a spooled delivery is one it could not store
        spool.drain(app, spool_dir)

    with factory() as session:
        after = ledger(session)
        leaks = leaked_tokens(session, since=since)
    events = after["events"] - before["events"]
    deliveries = after["deliveries"] - before["deliveries"]
    rejections = after["rejections"] - before["rejections"]
    reasons = {r: n - before["reasons"].get(r, 0) for r, n in sorted(after["reasons"].items())
               if n - before["reasons"].get(r, 0)}
    recorded = deliveries + rejections

    def say(line=""):
        print(line, file=out)

    say(f"fuzz: {requests} requests, seed {seed}, {db_label(database_url)}, body limit {max_body_bytes} B, "
        f"{elapsed:.1f} s ({requests / elapsed:.0f}/s)")
    say(f"  sent to /callbacks/ (ledgered)   {sent['ledgered']}")
    say(f"  sent elsewhere (404, unrecorded) {sent['other']}")
    say(f"  answers by status                {dict(sorted(statuses.items()))}")
    say(f"  cases by mutation                {dict(sorted(kinds.items()))}")
    say(f"  events stored (new)              {events}")
    say(f"  duplicates counted               {deliveries - events}")
    say(f"  rejections recorded              {rejections}")
    for reason, count in reasons.items():
        say(f"      {reason:<28} {count}")
    say(f"  ledger: {sent['ledgered']} sent = {events} new + {deliveries - events} duplicates "
        f"+ {rejections} rejections = {recorded}  -> "
        + ("BALANCED" if recorded == sent["ledgered"] else "UNBALANCED"))
    say(f"  valid callbacks accepted         {sent['valid_accepted']}/{sent['valid']}")
    say(f"  spooled (database refused)       {spooled}")
    say(f"  stored rows naming a URL token   {leaks}")
    if recorded != sent["ledgered"]:
        failures.append(f"ledger unbalanced: sent {sent['ledgered']}, recorded {recorded}")
    if spooled:
        failures.append(f"{spooled} deliveries spooled although the database was up")
    if leaks:
        failures.append(f"{leaks} stored rows name a URL token")
    for failure in failures[:20]:
        say(f"  FAIL {failure}")
    say("  result: " + ("FAILED" if failures
                        else "ok: no 5xx, ledger balanced, every valid callback accepted"))
    db.dispose(app)
    return failures


def db_label(url):
    """The database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main(argv=None):
    """Command line: python -m bench.fuzz --requests N [--database-url URL] [--seed S]."""
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="how many requests to send (5000)")
    parser.add_argument("--database-url", help="a scratch database (default: a temporary SQLite file)")
    parser.add_argument("--seed", type=int, help="random seed, to repeat a run (default: random)")
    parser.add_argument("--samples", help="folder of sample callbacks (default: the samples shipped in receiver/samples)")
    parser.add_argument("--max-body-bytes", type=int, default=1024 * 1024,
                        help="RECEIVER_MAX_BODY_BYTES for the run (1048576)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    samples = load_samples(args.samples)
    with tempfile.TemporaryDirectory(prefix="vodr-fuzz-") as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'fuzz.db'}"
        failures = run(url, args.requests, seed, samples, args.max_body_bytes)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
