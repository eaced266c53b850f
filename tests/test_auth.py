"""Callback authenticity: auth.py's pure checks, then the error matrix through the client."""
import json
import logging
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from receiver import auth, create_app
from receiver.auth import Signature
from receiver.config import ConfigError
from receiver.models import Event, Rejection

from conftest import SAMPLES

TOKEN = "current-token-0123456789abcdef"
OLD_TOKEN = "previous-token-0123456789abcdef"
KEY, OLD_KEY = "SignKey1234", "OldSignKey99"
NOW = 1_700_000_000

# --- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("presented, expected", [
    (TOKEN, True),
    (OLD_TOKEN, True),
    (TOKEN[:-1], False),
    (TOKEN + "x", False),
    ("", False),
    (None, False),
    ("tökén-with-non-ascii-characters", False),
    ("\ud800", False),
])
def test_token_matches_only_a_configured_token(presented, expected):
    assert auth.token_matches(presented, (TOKEN, OLD_TOKEN)) is expected


def test_no_token_matches_an_empty_list():
    assert not auth.token_matches(TOKEN, ())


# --- SignKey signatures --------------------------------------------------------------------


def test_sign_is_md5_of_key_then_decimal_expiry():
    # md5(b"SignKey1234" b"1700000000"), computed independently.
    assert auth.sign(KEY, 1_700_000_000) == "a2ea2f089d2560c9978c626d2ac115e8"
    assert auth.sign(KEY, "1700000000") == auth.sign(KEY, 1_700_000_000)


@pytest.mark.parametrize("document, query, expected", [
    ({"Sign": "s", "T": 1}, {}, Signature("s", 1, "body")),
    ({"Sign": "s", "T": 1}, {"Sign": "q", "T": "2"}, Signature("s", 1, "body")),
    ({"Sign": "s"}, {"Sign": "q", "T": "2"}, Signature("s", None, "body")),
    ({"EventType": "x"}, {"Sign": "q", "T": "2"}, Signature("q", "2", "query")),
    ({"EventType": "x"}, {"sign": "q", "t": "2"}, Signature("q", "2", "query")),
    (None, {"Sign": "q"}, Signature("q", None, "query")),
    ([{"Sign": "s", "T": 1}], {}, None),
    ("not an object", {}, None),
    ({"EventType": "x"}, {"signature": "q"}, None),
], ids=["body", "body-wins-over-query", "half-in-body-wins", "query-Sign-T", "query-sign-t",
        "query-half", "array-body", "string-body", "nothing"])
def test_find_signature_reads_the_body_then_the_query(document, query, expected):
    assert auth.find_signature(document, query) == expected


def _check(sign, expiry, keys=(KEY, OLD_KEY), now=NOW, skew=300, where="body"):
    refusal = auth.check_signature(Signature(sign, expiry, where), keys, now, skew)
    return refusal.reason if refusal else "ok"


@pytest.mark.parametrize("sign, expiry, expected", [
    (auth.sign(KEY, NOW + 600), NOW + 600, "ok"),
    (auth.sign(KEY, NOW + 600).upper(), NOW + 600, "ok"),
    (auth.sign(OLD_KEY, NOW + 600), NOW + 600, "ok"),
    (auth.sign(KEY, NOW + 600), str(NOW + 600), "ok"),
    (auth.sign(KEY, NOW - 299), NOW - 299, "ok"),
    (auth.sign(KEY, NOW - 301), NOW - 301, "signature_expired"),
    ("0" * 32, NOW - 10**6, "signature_invalid"),
    ("0" * 32, NOW + 600, "signature_invalid"),
    (auth.sign("NotTheKey", NOW + 600), NOW + 600, "signature_invalid"),
    (auth.sign(KEY, NOW + 600), NOW + 601, "signature_invalid"),
    (auth.sign(KEY, NOW + 600) + " ", NOW + 600, "signature_invalid"),
    (auth.sign(KEY, NOW + 600), float(NOW + 600), "signature_invalid"),
    (auth.sign(KEY, 1), True, "signature_invalid"),
    (auth.sign(KEY, -1), -1, "signature_invalid"),
    (auth.sign(KEY, "1e9"), "1e9", "signature_invalid"),
    (auth.sign(KEY, " 1"), " 1", "signature_invalid"),
    (auth.sign(KEY, 10**30), 10**30, "signature_invalid"),
    (123, NOW + 600, "signature_invalid"),
    (["x"], NOW + 600, "signature_invalid"),
    ("\ud800", NOW + 600, "signature_invalid"),
    (None, NOW + 600, "signature_missing"),
    ("", NOW + 600, "signature_missing"),
    (auth.sign(KEY, NOW + 600), None, "signature_missing"),
], ids=["good", "uppercase-hex", "rotated-key", "text-T", "late-within-skew", "expired", "forged-and-expired",
        "forged", "wrong-key", "T-changed", "trailing-space", "float-T", "bool-T", "negative-T",
        "exponent-T", "space-T", "huge-T", "number-Sign", "list-Sign", "surrogate-Sign", "no-Sign",
        "empty-Sign", "no-T"])
def test_check_signature(sign, expiry, expected):
    assert _check(sign, expiry) == expected


def test_check_signature_without_any_signature_is_missing():
    assert auth.check_signature(None, (KEY,), NOW, 300).reason == "signature_missing"


def test_expired_signature_says_by_how_much_without_revealing_the_key():
    signature = Signature(auth.sign(KEY, NOW - 1000), NOW - 1000, "query")
    refusal = auth.check_signature(signature, (KEY,), NOW, 300)
    assert refusal.status == 401
    assert refusal.details == {"found_in": "query", "T": NOW - 1000, "now": NOW, "clock_skew": 300}
    assert KEY not in json.dumps(refusal.to_dict())


# --- the address allowlist -----------------------------------------------------------------


def test_parse_networks_accepts_addresses_and_networks_of_both_families():
    networks = auth.parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert [str(n) for n in networks] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]


@pytest.mark.parametrize("entry", ["10.0.0.1/8", "300.1.1.1", "10.0.0.0/33", "example.com",
                                   "10.0.0.0-10.0.0.9"])
def test_parse_networks_names_the_bad_entry(entry):
    with pytest.raises(ValueError, match=repr(entry).replace("[", r"\[").replace(".", r"\.")):
        auth.parse_networks(["10.0.0.0/8", entry])


@pytest.mark.parametrize("address, expected", [
    ("10.1.2.3", True),
    ("11.1.2.3", False),
    ("2001:db8::1", True),
    ("2001:db9::1", False),
    ("::ffff:10.1.2.3", True),
    ("10.1.2.3:51234", True),
    ("[2001:db8::1]:443", True),
    (" 10.1.2.3 ", True),
    ("::1", False),
    ("unknown", False),
    ("", False),
    (None, False),
    ("10.1.2.3, 10.1.2.4", False),
])
def test_address_allowed(address, expected):
    networks = auth.parse_networks(["10.0.0.0/8", "2001:db8::/32"])
    assert auth.address_allowed(address, networks) is expected


# --- redaction -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (f"/callbacks/vod/{TOKEN}", "/callbacks/vod/[redacted]"),
    (f"/callbacks/vod/{TOKEN}/more?T=5", "/callbacks/vod/[redacted]?T=5"),
    ("/callbacks/vod?Sign=abc&T=5", "/callbacks/vod?Sign=[redacted]&T=5"),
    ("/callbacks/vod?t=5&sign=abc", "/callbacks/vod?t=5&sign=[redacted]"),
    (f"POST /callbacks/vod/{TOKEN}?sign=abc HTTP/1.1",
     "POST /callbacks/vod/[redacted]?sign=[redacted] HTTP/1.1"),
    (f"note: {TOKEN}", "note: [redacted]"),
    ("/callbacks/vod", "/callbacks/vod"),
    ("design=1&T=2", "design=1&T=2"),
])
def test_redact_hides_tokens_and_signatures(text, expected):
    assert auth.redact(text, (TOKEN,)) == expected
    assert auth.redact(expected, (TOKEN,)) == expected


def test_redacting_filter_rewrites_log_messages():
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '"%s" %s',
                               (f"POST /callbacks/vod/{TOKEN} HTTP/1.1", 200), None)
    assert auth.RedactingFilter([TOKEN]).filter(record)
    assert record.getMessage() == '"POST /callbacks/vod/[redacted] HTTP/1.1" 200'


def test_gunicorn_access_log_is_redacted(monkeypatch):
    from gunicorn.config import Config

    from receiver.gunicorn_conf import RedactingLogger

    monkeypatch.setenv("RECEIVER_CALLBACK_TOKENS", TOKEN)
    logger = RedactingLogger(Config())
    environ = {"REQUEST_METHOD": "POST", "RAW_URI": f"/callbacks/vod/{TOKEN}?sign=abc&T=1",
               "PATH_INFO": f"/callbacks/vod/{TOKEN}", "QUERY_STRING": "sign=abc&T=1",
               "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_REFERER": f"https://x/{TOKEN}"}
    response = SimpleNamespace(status="200 OK", headers=[], sent=2)
    request = SimpleNamespace(headers=[("X-NOTE", TOKEN)])
    atoms = logger.atoms(response, request, environ, SimpleNamespace(seconds=0, microseconds=5))
    assert TOKEN not in json.dumps(atoms, default=str)
    assert atoms["r"] == "POST /callbacks/vod/[redacted]?sign=[redacted]&T=1 HTTP/1.1"


# --- configuration -------------------------------------------------------------------------


def test_lists_are_parsed_once_from_comma_separated_text(make_app):
    app = make_app(RECEIVER_CALLBACK_TOKENS=f" {TOKEN} ,, {OLD_TOKEN},", VOD_SIGN_KEYS="a, b",
                   RECEIVER_ALLOWED_CIDRS="10.0.0.0/8, ::1")
    assert app.config["RECEIVER_CALLBACK_TOKENS"] == (TOKEN, OLD_TOKEN)
    assert app.config["VOD_SIGN_KEYS"] == ("a", "b")
    assert [str(n) for n in app.config["RECEIVER_ALLOWED_CIDRS"]] == ["10.0.0.0/8", "::1/128"]


@pytest.mark.parametrize("setting, value, message", [
    ("RECEIVER_ALLOWED_CIDRS", "10.0.0.0/8,10.0.0.1/8", "RECEIVER_ALLOWED_CIDRS=.*: '10.0.0.1/8'"),
    ("RECEIVER_ALLOWED_CIDRS", "nonsense", "RECEIVER_ALLOWED_CIDRS=nonsense: 'nonsense'"),
    ("RECEIVER_CALLBACK_TOKENS", f"{TOKEN},short", "token 2 of 2 must be 16 to 200"),
    ("RECEIVER_CALLBACK_TOKENS", "has/a/slash-in-it-0123456789", "token 1 of 1"),
    ("RECEIVER_SIGN_CLOCK_SKEW", -1, "RECEIVER_SIGN_CLOCK_SKEW=-1: must be a whole number from 0"),
])
def test_bad_settings_fail_at_startup_with_a_clear_message(setting, value, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as failure:
        create_app({setting: value, "RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert "short" not in str(failure.value) and "has/a/slash" not in str(failure.value)


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RECEIVER_CALLBACK_TOKENS", TOKEN)
    monkeypatch.setenv("VOD_SIGN_KEYS", KEY)
    monkeypatch.setenv("RECEIVER_SIGN_CLOCK_SKEW", "60")
    monkeypatch.setenv("RECEIVER_ALLOWED_CIDRS", "10.0.0.0/8")
    app = create_app({"RECEIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert (app.config["RECEIVER_CALLBACK_TOKENS"], app.config["VOD_SIGN_KEYS"]) == ((TOKEN,), (KEY,))
    assert app.config["RECEIVER_SIGN_CLOCK_SKEW"] == 60
    assert len(app.config["RECEIVER_ALLOWED_CIDRS"]) == 1


# --- through the client: the error matrix --------------------------------------------------


@pytest.fixture
def secured(make_app):
    """The receiver with two tokens, two SignKeys and an allowlist behind one proxy."""
    return make_app(RECEIVER_CALLBACK_TOKENS=f"{TOKEN},{OLD_TOKEN}", VOD_SIGN_KEYS=f"{KEY},{OLD_KEY}",
                    RECEIVER_ALLOWED_CIDRS="10.0.0.0/8", RECEIVER_TRUSTED_PROXIES=1,
                    RECEIVER_MAX_BODY_BYTES=8192)


def _upload():
    return json.loads((SAMPLES / "v3-push-newfileupload.json").read_bytes())


def _signed(document, key=KEY, expiry=None, upper=False, text_t=False, **extra):
    expiry = int(time.time()) + 600 if expiry is None else expiry
    sign = auth.sign(key, expiry)
    return json.dumps({**document, "Sign": sign.upper() if upper else sign,
                       "T": str(expiry) if text_t else expiry, **extra})


def _fresh():
    return int(time.time()) + 600


def _query_signed(names=("Sign", "T"), key=KEY):
    expiry = _fresh()
    return f"?{names[0]}={auth.sign(key, expiry)}&{names[1]}={expiry}"


CLIENT = {"X-Forwarded-For": "198.51.100.1, 10.1.2.3"}  # a spoofed entry, then what the proxy saw
AT = f"/callbacks/vod/{TOKEN}"


def _with(**fields):
    return lambda: json.dumps({**_upload(), **fields})


def _signed_at(expiry, key=KEY):
    return lambda: _signed(_upload(), key, expiry=expiry())


def _now(offset):
    return lambda: int(time.time()) + offset


MATRIX = [
    # id, method, path, body, headers, status, reason
    ("signed-in-body", "POST", AT, lambda: _signed(_upload()), CLIENT, 200, None),
    ("rotated-token-and-key", "POST", f"/callbacks/vod/{OLD_TOKEN}", lambda: _signed(_upload(), OLD_KEY),
     CLIENT, 200, None),
    ("uppercase-sign", "POST", AT, lambda: _signed(_upload(), upper=True), CLIENT, 200, None),
    ("text-T-in-body", "POST", AT, lambda: _signed(_upload(), text_t=True), CLIENT, 200, None),
    ("Sign-T-in-query", "POST", lambda: AT + _query_signed(), _with(), CLIENT, 200, None),
    ("sign-t-in-query", "POST", lambda: AT + _query_signed(("sign", "t"), OLD_KEY), _with(),
     CLIENT, 200, None),
    ("late-within-skew", "POST", AT, _signed_at(_now(-200)), CLIENT, 200, None),
    ("forged", "POST", AT, lambda: _with(Sign="0" * 32, T=_fresh())(), CLIENT, 401, "signature_invalid"),
    ("wrong-key", "POST", AT, _signed_at(_now(600), "NotTheKey"), CLIENT, 401, "signature_invalid"),
    ("forged-in-query", "POST", lambda: f"{AT}?sign={'f' * 32}&t={_fresh()}", _with(), CLIENT, 401,
     "signature_invalid"),
    ("expired", "POST", AT, _signed_at(_now(-3600)), CLIENT, 401, "signature_expired"),
    ("unsigned", "POST", AT, _with(), CLIENT, 401, "signature_missing"),
    ("Sign-without-T", "POST", AT, _with(Sign="0" * 32), CLIENT, 401, "signature_missing"),
    ("not-json-unsigned", "POST", AT, b"\xff{", CLIENT, 401, "signature_missing"),
    ("not-json-signed-in-query", "POST", lambda: AT + _query_signed(), b"\xff{", CLIENT, 400, "invalid_json"),
    ("signed-but-invalid-event", "POST", AT,
     lambda: _signed({"EventType": "NewFileUpload", "FileUploadEvent": {}}), CLIENT, 422, "invalid_event"),
    ("wrong-token", "POST", f"/callbacks/vod/{TOKEN[:-1]}X", lambda: _signed(_upload()), CLIENT, 401,
     "token_invalid"),
    ("bare-path", "POST", "/callbacks/vod", lambda: _signed(_upload()), CLIENT, 401, "token_missing"),
    ("ip-denied", "POST", AT, lambda: _signed(_upload()), {"X-Forwarded-For": "198.51.100.1"}, 403,
     "ip_not_allowed"),
    ("ip-spoofed-first-entry", "POST", AT, lambda: _signed(_upload()),
     {"X-Forwarded-For": "10.1.2.3, 198.51.100.1"}, 403, "ip_not_allowed"),
    ("no-forwarded-for", "POST", AT, lambda: _signed(_upload()), {}, 403, "ip_not_allowed"),
    ("denied-ip-before-bad-token", "POST", "/callbacks/vod/wrong", b"", {}, 403, "ip_not_allowed"),
    ("too-large", "POST", AT, lambda: _signed(_upload(), Pad="x" * 9000), CLIENT, 413, "body_too_large"),
    ("bad-token-before-size", "POST", "/callbacks/vod", "x" * 9000, CLIENT, 401, "token_missing"),
    ("get", "GET", AT, b"", CLIENT, 405, "method_not_allowed"),
    ("put-bare", "PUT", "/callbacks/vod", lambda: _signed(_upload()), CLIENT, 405, "method_not_allowed"),
    ("options", "OPTIONS", AT, b"", CLIENT, 405, "method_not_allowed"),
    ("head", "HEAD", "/callbacks/vod", b"", CLIENT, 405, "method_not_allowed"),
    ("long-method", "PROPFIND-AND-THEN-SOME-MORE", "/callbacks/vod", b"", CLIENT, 405, "method_not_allowed"),
    ("extra-segment", "POST", f"{AT}/more", lambda: _signed(_upload()), CLIENT, 404, "not_found"),
    ("double-slash", "POST", f"/callbacks//vod/{TOKEN}", lambda: _signed(_upload()), CLIENT, 404,
     "not_found"),
    ("other-callback", "POST", "/callbacks/other", lambda: _signed(_upload()), CLIENT, 404, "not_found"),
]


def _resolve(value):
    return value() if callable(value) else value


@pytest.mark.parametrize("method, path, body, headers, status, reason",
                         [case[1:] for case in MATRIX], ids=[case[0] for case in MATRIX])
def test_callback_error_matrix(secured, session, method, path, body, headers, status, reason):
    response = secured.test_client().open(_resolve(path), method=method, data=_resolve(body), headers=headers)

    assert response.status_code == status
    rejections = session.scalars(select(Rejection)).all()
    events = session.scalars(select(Event)).all()
    if reason is None:
        assert response.get_json() == {}
        assert (len(events), len(rejections)) == (1, 0)
        assert events[0].event_type == "NewFileUpload"
        return
    if method != "HEAD":
        assert response.get_json()["error"]["code"] == reason
    if status == 405:
        assert response.headers["Allow"] == "POST"
    assert (len(events), len(rejections)) == (0, 1)
    rejection = rejections[0]
    assert (rejection.reason, rejection.status_code, rejection.method) == (reason, status, method[:16])
    stored = json.dumps([rejection.path, rejection.headers, rejection.details, rejection.message])
    assert TOKEN not in stored and OLD_TOKEN not in stored and KEY not in stored
    assert rejection.path.startswith("/callbacks/")


def test_paths_outside_callbacks_are_not_recorded(secured, session):
    response = secured.test_client().post("/elsewhere", data=b"{}", headers=CLIENT)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert session.scalars(select(Rejection)).all() == []


def test_stored_rows_keep_the_query_but_not_the_token_or_sign(secured, session):
    expiry = int(time.time()) - 3600
    client = secured.test_client(use_cookies=False)  # else the client replaces Cookie with its jar
    client.post(f"/callbacks/vod/{TOKEN}?Sign={auth.sign(KEY, expiry)}&T={expiry}",
                data=json.dumps(_upload()), headers={
                    **CLIENT, "Referer": f"https://example.com/callbacks/vod/{TOKEN}",
                    "X-Note": f"token is {OLD_TOKEN}", "Authorization": "Bearer abc",
                    "Cookie": "session=abc", "X-Callback-Token": TOKEN})

    rejection = session.scalars(select(Rejection)).one()
    assert rejection.reason == "signature_expired"
    assert rejection.path == f"/callbacks/vod/[redacted]?Sign=[redacted]&T={expiry}"
    assert rejection.headers["Referer"] == "https://example.com/callbacks/vod/[redacted]"
    assert rejection.headers["X-Note"] == "token is [redacted]"
    for name in ("Authorization", "Cookie", "X-Callback-Token"):
        assert rejection.headers[name] == "[redacted]"
    assert rejection.remote_addr == "10.1.2.3"


def test_body_signature_does_not_change_the_dedup_key(secured, session):
    client = secured.test_client()
    document = json.loads((SAMPLES / "v3-push-procedurestatechanged.json").read_bytes())
    for expiry in (_fresh(), _fresh() + 1):
        assert client.post(f"/callbacks/vod/{TOKEN}", data=_signed(document, expiry=expiry),
                           headers=CLIENT).status_code == 200

    assert [e.delivery_count for e in session.scalars(select(Event))] == [2]


def test_token_in_logged_messages_is_redacted(secured, caplog):
    caplog.set_level(logging.INFO)
    with secured.test_request_context(f"/callbacks/vod/{TOKEN}"):
        secured.logger.error("Exception on %s [POST]", f"/callbacks/vod/{TOKEN}")
        logging.getLogger("werkzeug").info('"POST %s HTTP/1.1" 200 -', f"/x?Sign=abc&t=1&note={TOKEN}")
    assert TOKEN not in caplog.text
    assert "/callbacks/vod/[redacted]" in caplog.text and "Sign=[redacted]" in caplog.text


# --- with nothing configured ---------------------------------------------------------------


def test_without_settings_the_bare_path_takes_unsigned_callbacks_from_anywhere(client, session):
    response = client.post("/callbacks/vod", data=json.dumps(_upload()),
                           headers={"X-Forwarded-For": "198.51.100.1"})
    assert response.status_code == 200
    assert len(session.scalars(select(Event)).all()) == 1


def test_without_tokens_a_token_path_is_not_found_and_recorded(client, session):
    response = client.post(f"/callbacks/vod/{TOKEN}", data=json.dumps(_upload()))
    assert response.status_code == 404
    rejection = session.scalars(select(Rejection)).one()
    assert (rejection.reason, rejection.path) == ("not_found", "/callbacks/vod/[redacted]")


def test_signature_alone_is_enough_when_only_sign_keys_are_set(make_app, session):
    client = make_app(VOD_SIGN_KEYS=KEY).test_client()
    assert client.post("/callbacks/vod", data=_signed(_upload())).status_code == 200
    assert client.post("/callbacks/vod", data=json.dumps(_upload())).status_code == 401
    assert [r.reason for r in session.scalars(select(Rejection))] == ["signature_missing"]


def test_allowlist_uses_the_socket_address_without_trusted_proxies(make_app, session):
    client = make_app(RECEIVER_ALLOWED_CIDRS="127.0.0.0/8").test_client()
    # X-Forwarded-For is ignored: no proxy is trusted, so the socket address decides.
    assert client.post("/callbacks/vod", data=json.dumps(_upload()),
                       headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200
    denied = make_app(RECEIVER_ALLOWED_CIDRS="10.0.0.0/8").test_client()
    assert denied.post("/callbacks/vod", data=json.dumps(_upload()),
                       headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 403
