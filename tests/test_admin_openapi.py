"""Schemathesis drives the whole admin API from its OpenAPI document, on both databases:
no 500, and every response matches the documented status codes and schemas."""
from datetime import timedelta

import pytest
import schemathesis
from schemathesis.checks import positive_data_acceptance
from factories import T0, deliver, upload, upload_record
from hypothesis import HealthCheck, given, settings

from receiver import admin, db, reparse, store
from receiver.events import Refusal
from receiver.store import Delivery

TOKEN = "schemathesis-token"
OPERATIONS = [("GET", "/events"), ("GET", "/events/{event_id}"), ("GET", "/rejections"),
              ("GET", "/rejections/{rejection_id}"), ("GET", "/stats"),
              ("POST", "/events/replay"), ("POST", "/events/{event_id}/replay"),
              ("GET", "/uploads"), ("GET", "/uploads/{upload_id}")]


@pytest.fixture
def api(app):
    """The admin API's OpenAPI schema, served by an app holding a few events and rejections."""
    app.config["RECEIVER_ADMIN_TOKENS"] = [TOKEN]
    admin.init_app(app)
    # Rows to find, so responses are not all empty lists and 404s: a duplicate, equal
    # instants, and a rejection whose body is not UTF-8 (shown as base64).
    for n in range(5):
        upload(app, n, minutes=n // 2)
    upload(app, 1)
    deliver(app, b"\xff not json", received_at=T0 + timedelta(minutes=1))
    deliver(app, b'{"EventType": "NewFileUpload"}')
    # An event with parse warnings, and a rejection resolved into an event, for their shapes.
    deliver(app, b'{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "w", "MetaData": []}}')
    with db.session_factory(app)() as session, session.begin():
        store.reject(session.connection(), Delivery(body=b'{"EventType": "EditMediaComplete", '
                                                    b'"EditMediaCompleteEvent": {"TaskId": "r"}}'),
                     Refusal("invalid_event", "refused by an older parser", 422))
    assert reparse.reparse(app, dry_run=False).new == 1
    upload_record(app, 1)  # linked to the event of f1
    upload_record(app, 2, state="failed")
    upload_record(app, 3, state="stored", minutes=1)
    return schemathesis.openapi.from_wsgi(f"{admin.PREFIX}/openapi.json", app)


# Schemathesis' own pytest integration (schema.parametrize / from_fixture) does not run on
# pytest 9.2, so each operation's strategy is driven with plain hypothesis.
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
@pytest.mark.parametrize("method, path", OPERATIONS)
def test_admin_api_conforms_to_its_openapi_document(api, method, path, mode):
    operation = api[admin.PREFIX + path][method]

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def check(case):
        # A cursor is opaque: no schema can tell the ones we issued from random strings, so a
        # 400 for a made-up one is right (test_admin checks it) though the schema allows it.
        excluded = [positive_data_acceptance] if "cursor" in (case.query or {}) else []
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded)

    check()


def test_every_documented_operation_is_driven(api):
    assert sorted((op.ok().method.upper(), op.ok().path) for op in api.get_all_operations()) == \
        sorted((method, admin.PREFIX + path) for method, path in OPERATIONS)
