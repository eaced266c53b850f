"""Fuzzing the callback endpoint: no 5xx, every request recorded exactly once, valid ones accepted.

The long run is `python -m bench.fuzz` (see its docstring); these keep the example counts small
enough for the suite to stay fast on both databases.
"""
import io
import json
import time

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from bench import fuzz
from conftest import SAMPLES
from receiver import auth, db, spool

MAX_BODY = 64 * 1024
DOCUMENTS = fuzz.load_samples(SAMPLES if SAMPLES.is_dir() else None)
# The app (and its database) is built once per test, not per example: the ledger is checked as
# a difference around each request, so what earlier examples stored does not matter.
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

KEYS = ["EventType", "FileUploadEvent", "ProcedureStateChangeEvent", "FileDeleteEvent", "FileId", "FileIdSet",
        "TaskId", "Status", "MediaBasicInfo", "MetaData", "CreateTime", "SourceInfo", "SourceContext", "Size",
        "Duration", "Width", "Height", "ClassId", "Sign", "T", "version", "eventType", "data", "fileId",
        "fileInfo", "metaData", "EventHandle"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text() | st.sampled_from(["NewFileUpload", "FileDeleted", "ProcedureStateChanged", "4.0",
                                   "2019-07-16T06:25:18Z", "9999-12-31T23:59:59-01:00"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), children, max_size=6),
    max_leaves=40,
)
# Documents close enough to a callback to get past the envelope, with anything in the fields.
callback_like = st.one_of(
    st.fixed_dictionaries({
        "EventType": st.sampled_from(["NewFileUpload", "FileDeleted", "PullComplete"]) | st.text(),
        "FileUploadEvent": st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8),
    }),
    st.fixed_dictionaries({
        "version": st.sampled_from(["4.0", 4, "5"]),
        "eventType": st.text() | st.just("NewFileUpload"),
        "data": st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8),
    }),
    json_values,
)


@pytest.fixture
def fuzz_app(make_app, database_url, tmp_path):
    """The receiver with every authenticity check on, as the fuzz run configures it."""
    return make_app(**fuzz.fuzz_config(database_url, tmp_path / "spool", MAX_BODY))


def _send_and_count(app, case):
    factory = db.session_factory(app)
    with factory() as session:
        before = fuzz.ledger(session)
    response = fuzz.send(app.test_client(), case)
    with factory() as session:
        after = fuzz.ledger(session)
    recorded = after["deliveries"] - before["deliveries"] + after["rejections"] - before["rejections"]
    return response, recorded


def _signed_case(body):
    expiry = int(time.time()) + 600
    path = f"/callbacks/vod/{fuzz.TOKENS[0]}?Sign={auth.sign(fuzz.SIGN_KEYS[0], expiry)}&T={expiry}"
    return fuzz.Case("POST", path, {"X-Forwarded-For": "10.0.0.1"}, body, valid=False)


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_fuzzed_request_is_answered_below_500_and_recorded_once(fuzz_app, rng):
    case = fuzz.Fuzzer(rng, DOCUMENTS, MAX_BODY).case()
    note(f"{case.method} {case.path} kinds={case.kinds} headers={case.headers} body={case.body[:300]!r}")

    response, recorded = _send_and_count(fuzz_app, case)

    assert response.status_code < 500
    assert recorded == (1 if case.ledgered else 0)
    if case.valid:
        assert response.status_code == 200
    assert spool.depth(fuzz_app.config["RECEIVER_SPOOL_DIR"]) == 0


@FUZZ
@given(document=callback_like)
def test_any_signed_json_document_is_stored_or_refused_never_lost(fuzz_app, document):
    body = json.dumps(document).encode("utf-8", "surrogatepass")

    response, recorded = _send_and_count(fuzz_app, _signed_case(body))

    # Sign or T in the body outranks the good signature in the query (auth.find_signature).
    body_signed = isinstance(document, dict) and ("Sign" in document or "T" in document)
    assert response.status_code in ((200, 400, 401, 422) if body_signed else (200, 400, 422))
    assert recorded == 1
    assert spool.depth(fuzz_app.config["RECEIVER_SPOOL_DIR"]) == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600))
def test_any_signed_bytes_are_stored_or_refused_never_lost(fuzz_app, body):
    response, recorded = _send_and_count(fuzz_app, _signed_case(body))

    assert response.status_code in (200, 400, 422)
    assert recorded == 1


@given(document=json_values, now=st.integers(0, 2**40), skew=st.integers(0, 10**6),
       query=st.dictionaries(st.sampled_from(["Sign", "sign", "T", "t", "x"]), st.text()))
def test_signature_checks_never_raise(document, query, now, skew):
    refusal = auth.check_signature(auth.find_signature(document, query), ("k1", "k2"), now, skew)
    assert refusal is None or refusal.reason in ("signature_missing", "signature_invalid",
                                                 "signature_expired")


@given(address=st.text() | st.ip_addresses().map(str))
def test_address_allowed_never_raises(address):
    networks = auth.parse_networks(["10.0.0.0/8", "2001:db8::/32"])
    assert auth.address_allowed(address, networks) in (True, False)


@given(prefix=st.text(), suffix=st.text())
def test_redact_removes_the_token_wherever_it_is(prefix, suffix):
    token = fuzz.TOKENS[0]
    assert token not in auth.redact(prefix + token + suffix, fuzz.TOKENS)
    assert token not in auth.redact(f"{prefix}/callbacks/vod/{token}{suffix}")


def test_fuzz_run_balances_its_ledger(database_url):
    out = io.StringIO()

    failures = fuzz.run(database_url, 300, seed=3, samples=DOCUMENTS, max_body_bytes=MAX_BODY, out=out)

    assert failures == [], out.getvalue()
    assert "BALANCED" in out.getvalue()
