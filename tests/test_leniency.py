"""Property: a callback VOD sent is stored as an event, whatever shape its other fields take.

Over every sample body of every format: any field that is not identity, replaced by any JSON
value, is stored as the event with its identity (and a warning when the value could not be
taken); an identity field of the wrong shape is refused, naming the field. Through the real
callback URL and store, on SQLite and PostgreSQL.
"""
import copy
import json

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from marshmallow import fields as mm_fields
from sqlalchemy import select

from factories import callback_samples
from receiver import db, events, schemas
from receiver.models import Base, Event, Rejection

URL = "/callbacks/vod"
SAMPLES = [(name, json.loads(body), events.parse(body)) for name, body in callback_samples()]
PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# What identifies an event (vod-spec §4's dedup keys), written out here rather than read from the
# schemas' marks, so that a mark lost or added there fails this test.
V3_IDENTITY = {"NewFileUpload": {"FileId"}, "FileDeleted": {"FileIdSet", "TaskId"}}
V2_IDENTITY = {"NewFileUpload": {"fileId"}, "FileDeleted": {"fileInfo", "vodTaskId"}}
# Values no identity field takes: not a string, not an integer, not a list of FileIds.
WRONG_SHAPES = [True, 1.5, [1.5], [{}], [[]]]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | st.sampled_from(["", "2019-01-09T16:36:22Z", "x" * 1500, "\x00"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


def _identity(parsed):
    """The body paths that must be valid for this event: its type, its data, its dedup key."""
    if parsed.format == "v2":
        return {("eventType",), ("data",)} | {
            ("data", key) for key in V2_IDENTITY.get(parsed.event_type, {"vodTaskId"})}
    return {("EventType",), (parsed.data_key,)} | {
        (parsed.data_key, key) for key in V3_IDENTITY.get(parsed.event_type, {"TaskId"})}


def _data_schema(parsed):
    if parsed.format == "v2":
        return {"NewFileUpload": schemas.v2_new_file_upload,
                "FileDeleted": schemas.v2_file_deleted}.get(parsed.event_type, schemas.v2_data)
    return {"NewFileUpload": schemas.file_upload_task,
            "FileDeleted": schemas.file_delete_task}.get(parsed.event_type, schemas.task)


def _schema_paths(schema, prefix):
    """Every field path the schema reads, objects followed into."""
    for name, field in schema.load_fields.items():
        path = (*prefix, field.data_key or name)
        yield path
        if isinstance(field, schemas.Object) and not isinstance(field, schemas.TaskInput):
            yield from _schema_paths(field.schema, path)


def _body_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _body_paths(item, (*prefix, key))


def _lenient_paths(document, parsed):
    """The paths in or for this body that are not identity: fields we read, and any other key."""
    identity = _identity(parsed)
    where = ("data",) if parsed.format == "v2" else (parsed.data_key,)
    envelope = schemas.v2_envelope if parsed.format == "v2" else schemas.v3_envelope
    paths = set(_body_paths(document)) | set(_schema_paths(_data_schema(parsed), where)) | set(
        _schema_paths(envelope, ()))
    # Beside the data only the envelope's own fields: another top-level object would make a
    # second candidate for the data of an event type we do not know.
    fields = identity - {where}  # what is inside the data object is not identity, but these are
    return sorted(p for p in paths if p[:1] == where or len(p) == 1 and p[0] in envelope.load_fields
                  if p != where and not any(p[:len(i)] == i for i in fields))


def _field_at(parsed, path):
    """The schema field reading `path`, or None if the parser does not read it."""
    where = 1
    schema = _data_schema(parsed)
    if len(path) == 1:
        schema, where = (schemas.v2_envelope if parsed.format == "v2" else schemas.v3_envelope), 0
    field = None
    for key in path[where:]:
        field = schema.load_fields.get(key) if schema is not None else None
        schema = field.schema if isinstance(field, schemas.Object) else None
    return field


def _put(document, path, value):
    """A copy of `document` with `value` at `path` (objects made on the way where missing)."""
    document = copy.deepcopy(document)
    target = document
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return document


def _identity_column(parsed):
    return {"NewFileUpload": "file_id", "FileDeleted": "file_ids"}.get(parsed.event_type, "task_id")


def _keyed_on_identity(parsed):
    # ProcedureStateChanged and events without a TaskId are keyed on their body, which changed.
    return parsed.event_type != "ProcedureStateChanged" and bool(parsed.fields[_identity_column(parsed)])


@pytest.fixture
def post(app):
    """POST a body to the callback URL on empty tables; the response and the rows it left."""
    client, factory = app.test_client(), db.session_factory(app)

    def send(body):
        with db.engine(app).begin() as conn:  # each example starts from empty tables
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        response = client.post(URL, data=body)
        with factory() as session:
            return (response, session.scalars(select(Event)).all(),
                    session.scalars(select(Rejection)).all())

    return send


@st.composite
def lenient_cases(draw):
    name, document, parsed = draw(st.sampled_from(SAMPLES))
    path = draw(st.sampled_from(_lenient_paths(document, parsed)))
    return name, document, parsed, path, draw(json_values)


@st.composite
def identity_cases(draw):
    name, document, parsed = draw(st.sampled_from(SAMPLES))
    # Not v3's data object itself: without it no data is found, a refusal of its own.
    path = draw(st.sampled_from(sorted(p for p in _identity(parsed)
                                       if parsed.format == "v2" or p != (parsed.data_key,))))
    return name, document, parsed, path, draw(st.sampled_from(WRONG_SHAPES))


@PROPERTY
@given(case=lenient_cases())
def test_any_value_in_a_non_identity_field_is_stored_with_the_event_identity(post, case):
    name, document, original, path, value = case
    body = json.dumps(_put(document, path, value)).encode()
    note(f"{name}: {'.'.join(map(str, path))} = {value!r}")

    response, [event], rejections = post(body)

    assert response.status_code == 200 and rejections == []
    assert (event.format, event.event_type, event.body) == (original.format, original.event_type, body)
    column = _identity_column(original)
    assert getattr(event, column) == original.fields[column]
    if _keyed_on_identity(original):
        assert event.dedup_key == original.dedup_key
    dotted = ".".join(map(str, path))
    for warning in event.parse_warnings or []:
        assert warning["field"] == dotted or warning["field"].startswith(dotted + "."), warning
    field = _field_at(original, path)
    takes_containers = isinstance(field, (mm_fields.Nested, mm_fields.List, mm_fields.Dict, mm_fields.Raw))
    if field is not None and not takes_containers and isinstance(value, (dict, list)):
        # A scalar field sent as an object or a list: left out, and said so.
        assert [(w["field"], w["stored"]) for w in event.parse_warnings] == [(dotted, "nothing")]


@PROPERTY
@given(case=identity_cases())
def test_an_identity_field_of_the_wrong_shape_is_refused_naming_it(post, case):
    name, document, original, path, value = case
    body = json.dumps(_put(document, path, value)).encode()
    note(f"{name}: {'.'.join(map(str, path))} = {value!r}")

    response, stored, [rejection] = post(body)

    assert stored == []
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == rejection.reason == "invalid_event"
    assert ".".join(path) in error["message"] or f"{path[-1]}:" in error["message"], error["message"]


# Every non-identity path of every sample, with values of every JSON kind: the sweep the
# property above samples from, without the database, so that no field is left to chance.
ODD_VALUES = [None, True, -1, 2**64, 1.5, "", "\x00", "x" * 1500, [], [{"a": 1}], {}, {"a": [1]}]


@pytest.mark.parametrize("name, document, original", SAMPLES, ids=[name for name, _d, _p in SAMPLES])
def test_every_non_identity_path_takes_every_kind_of_value(name, document, original):
    for path in _lenient_paths(document, original):
        for value in ODD_VALUES:
            parsed = events.parse(json.dumps(_put(document, path, value)).encode())
            assert (parsed.format, parsed.event_type) == (original.format, original.event_type), path
            column = _identity_column(original)
            assert parsed.fields[column] == original.fields[column], (path, value)
            if _keyed_on_identity(original):
                assert parsed.dedup_key == original.dedup_key, (path, value)
