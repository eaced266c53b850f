"""store.CompiledInsert writes exactly the rows Connection.execute would, on both databases."""
from sqlalchemy import text

from factories import T0, callback_samples

from receiver import db, store
from receiver.events import Refusal
from receiver.models import Base


def _stored(connection, table):
    # The database's own text of every value, so a difference in how a value was bound
    # (a datetime's format, JSON null against SQL NULL) shows up, not only in what it reads as.
    rows = connection.execute(text(f"SELECT * FROM {table} ORDER BY id")).mappings().all()
    return [{key: value for key, value in row.items() if key != "id"} for row in rows]


def _write_every_kind(app):
    # The last body has an odd CreateTime: an event with parse_warnings.
    odd = b'{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "odd", "MediaBasicInfo": {"CreateTime": 5}}}'
    deliveries = [store.Delivery(body=body, received_at=T0, headers={"Content-Type": "application/json"})
                  for body in [body for _name, body in callback_samples()] + [odd]]
    with db.engine(app).begin() as connection:
        for delivery in deliveries + deliveries[:3]:  # the last three as duplicates
            store.record(connection, delivery, store.judge(delivery))
        store.record(connection, deliveries[0], Refusal("bad_json", "Not JSON.", details=None))
        store.record(connection, deliveries[0], Refusal("body_too_large", "Too large.", status=413,
                                                         details={"limit": 10}))
        stored = {table: _stored(connection, table) for table in ("events", "rejections")}
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    return stored


def test_compiled_inserts_write_what_sqlalchemy_execute_writes(make_app, monkeypatch):
    app = make_app()
    ours = _write_every_kind(app)
    monkeypatch.setattr(store.CompiledInsert, "execute",
                        lambda self, connection, values: connection.execute(self.statement, values).one())
    theirs = _write_every_kind(app)
    assert len(ours["events"]) > 10 and len(ours["rejections"]) == 2
    assert max(row["delivery_count"] for row in ours["events"]) >= 2
    assert sum(row["parse_warnings"] is not None for row in ours["events"]) == 1
    assert ours == theirs
