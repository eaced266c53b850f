"""Pure parsing: formats, every event type's data key, doc quirks, dedup keys, refusals."""
import json
from datetime import datetime, timezone

import pytest

from factories import callback_samples, new_file_upload, sample
from receiver import events
from receiver.events import Refusal


@pytest.mark.parametrize("name, body", callback_samples(), ids=[n for n, _ in callback_samples()])
def test_every_sample_callback_parses(name, body):
    parsed = events.parse(body)
    document = json.loads(body)
    if parsed.format == "v3":
        assert parsed.event_type == document.get("EventType", parsed.event_type)
        assert isinstance(document[parsed.data_key], dict)
    else:
        assert parsed.event_type == document["eventType"]
    assert len(parsed.dedup_key) == 64


def test_v3_new_file_upload_fields():
    parsed = events.parse(sample("v3-push-newfileupload.json"))
    assert (parsed.format, parsed.event_type, parsed.data_key) == ("v3", "NewFileUpload", "FileUploadEvent")
    assert parsed.fields == {
        "event_handle": None,
        "task_id": None,
        "status": None,
        "file_id": "5285890784273533167",
        "file_ids": None,
        "media_url": "http://125676836723.vod2.myqcloud.com/xxx/xxx/q1BORBPQH1IA.mp4",
        "source_type": "Upload",
        "source_context": "",
        "procedure_task_id": "",
        "review_audio_video_task_id": "",
        "media_name": "Animal World",
        "media_type": "mp4",
        "storage_region": "ap-chongqing",
        "class_id": 0,
        "media_created_at": datetime(2019, 1, 9, 16, 36, 22, tzinfo=timezone.utc),
        "size": None,
        "duration": None,
        "width": None,
        "height": None,
    }


def test_v2_new_file_upload_fields():
    parsed = events.parse(sample("v2-newfileupload.json"))
    assert (parsed.format, parsed.event_type, parsed.data_key) == ("v2", "NewFileUpload", "data")
    assert parsed.fields["file_id"] == "5285890784273533167"
    assert parsed.fields["media_url"] == "http://125676836723.vod2.myqcloud.com/xxx/xxx/f0.flv"
    assert parsed.fields["source_type"] == "Record"
    assert parsed.fields["source_context"] == "rtmp://54xx.livepush.myqcloud.com/live?bizid=54xx&record=mp4&xx"
    assert parsed.fields["procedure_task_id"] == "125676836723-mango-fa2fdf6a0f850d673be119cf51a7603a"
    assert parsed.fields["media_name"] == "Animal World"


def test_v2_metadata_from_top_level_or_metadata_object():
    archived = events.parse(sample("v2-newfileupload-with-metadata-archived.json")).fields
    assert (archived["size"], archived["duration"], archived["width"], archived["height"]) == (38394819, 21, 1280, 720)
    assert archived["status"] == "0"
    body = {"version": "4.0", "eventType": "NewFileUpload",
            "data": {"fileId": "1", "metaData": {"size": 5, "duration": 1.5, "width": 4, "height": 3}}}
    nested = events.parse(json.dumps(body).encode()).fields
    assert (nested["size"], nested["duration"], nested["width"], nested["height"]) == (5, 1.5, 4, 3)


def test_v3_metadata_is_parsed_when_present():
    document = json.loads(new_file_upload())
    document["FileUploadEvent"]["MetaData"] = {"Size": 7700180, "Duration": 60.5, "Width": 640, "Height": 480}
    fields = events.parse(json.dumps(document).encode()).fields
    assert (fields["size"], fields["duration"], fields["width"], fields["height"]) == (7700180, 60.5, 640, 480)


def test_file_id_sent_as_a_json_number_keeps_every_digit():
    body = b'{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":5285890784273533167}}'
    assert events.parse(body).fields["file_id"] == "5285890784273533167"


def test_wechat_publish_doc_spelling_is_accepted():
    body = {"EventType": "WechatPublishComplete", "WechatPublishComplete": {"TaskId": "t-1", "Status": "FINISH"}}
    parsed = events.parse(json.dumps(body).encode())
    assert (parsed.data_key, parsed.fields["task_id"]) == ("WechatPublishComplete", "t-1")


def test_2017_compat_body_listing_other_keys_as_null():
    parsed = events.parse(sample("v3-push-transcodecomplete-2017compat.json"))
    assert (parsed.event_type, parsed.data_key) == ("TranscodeComplete", "TranscodeCompleteEvent")
    assert parsed.fields["file_id"] == "24961954183923290"


def test_missing_event_type_is_taken_from_the_data_key():
    body = {"EventHandle": "h", "ComposeMediaCompleteEvent": {"TaskId": "c-1", "Status": "FINISH"}}
    parsed = events.parse(json.dumps(body).encode())
    assert (parsed.event_type, parsed.fields["event_handle"]) == ("ComposeMediaComplete", "h")


def test_unknown_event_type_is_stored_generically():
    body = {"EventType": "SomethingNewComplete", "SomethingNewCompleteEvent": {"TaskId": "n-1"}}
    parsed = events.parse(json.dumps(body).encode())
    assert (parsed.event_type, parsed.data_key, parsed.fields["task_id"]) == (
        "SomethingNewComplete", "SomethingNewCompleteEvent", "n-1")


def test_file_deleted_lists_its_files():
    fields = events.parse(sample("v3-push-filedeleted.json")).fields
    assert fields["file_ids"] == ["24961954183381008", "24961954183381009", "24961954183381010"]
    v2 = events.parse(sample("v2-filedeleted.json")).fields
    assert (v2["file_ids"], v2["file_id"]) == (["24961954183381008"], "24961954183381008")


def _key(document):
    return events.parse(json.dumps(document).encode()).dedup_key


def test_new_file_upload_dedups_on_file_id_within_a_format():
    assert events.parse(new_file_upload("1", source_context="a")).dedup_key == \
        events.parse(new_file_upload("1", source_context="b")).dedup_key
    assert events.parse(new_file_upload("1")).dedup_key != events.parse(new_file_upload("2")).dedup_key
    v2 = {"version": "4.0", "eventType": "NewFileUpload", "data": {"fileId": "1"}}
    assert _key(v2) != events.parse(new_file_upload("1")).dedup_key


def test_pulled_event_dedups_with_its_push():
    push = json.loads(sample("v3-push-filedeleted.json"))
    assert _key({**push, "EventHandle": "handle-1"}) == _key(push)


def test_procedure_state_changes_differ_by_status_and_body():
    document = json.loads(sample("v3-push-procedurestatechanged.json"))
    finished = _key(document)
    document["ProcedureStateChangeEvent"]["Status"] = "PROCESSING"
    assert _key(document) != finished
    document["ProcedureStateChangeEvent"]["Status"] = "FINISH"
    document["ProcedureStateChangeEvent"]["Message"] = "changed"
    assert _key(document) != finished


def test_file_deleted_dedups_on_the_sorted_file_set():
    a = {"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["2", "1"]}}
    b = {"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": ["1", "2"]}}
    assert _key(a) == _key(b)


def test_other_events_dedup_on_task_id_else_body():
    a = {"EventType": "EditMediaComplete", "EditMediaCompleteEvent": {"TaskId": "t", "Status": "FINISH"}}
    b = {"EventType": "EditMediaComplete", "EditMediaCompleteEvent": {"TaskId": "t", "Status": "FINISH", "X": 1}}
    assert _key(a) == _key(b)
    c = {"EventType": "RestoreMediaComplete", "RestoreMediaCompleteEvent": {"FileId": "1", "Status": 0}}
    d = {"EventType": "RestoreMediaComplete", "RestoreMediaCompleteEvent": {"FileId": "1", "Status": 1}}
    assert _key(c) != _key(d)


BAD_BODIES = [
    (b"", "invalid_json"),
    (b"   ", "invalid_json"),
    (b"not json", "invalid_json"),
    (b'{"EventType": "NewFileUpload"', "invalid_json"),
    (b"\xff\xfe{}", "invalid_json"),
    (b'{"a": NaN}', "invalid_json"),
    (b'{"a": 1e999}', "invalid_json"),
    (b"[" * 100000 + b"]" * 100000, "invalid_json"),
    (b"[]", "not_an_object"),
    (b'"NewFileUpload"', "not_an_object"),
    (b"{}", "unknown_format"),
    (b'{"hello": "world"}', "unknown_format"),
    (b'{"EventType": "NewFileUpload"}', "invalid_event"),
    (b'{"EventType": 5, "FileUploadEvent": {"FileId": "1"}}', "invalid_event"),
    (b'{"EventType": "NewFileUpload", "FileUploadEvent": {}}', "invalid_event"),
    (b'{"EventType": "NewFileUpload", "FileUploadEvent": []}', "invalid_event"),
    (b'{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": 1.5}}', "invalid_event"),
    (b'{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": true}}', "invalid_event"),
    (b'{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "a\\u0000b"}}', "invalid_event"),
    (b'{"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "\\ud800"}}', "invalid_event"),
    (b'{"Unknown": {"a": 1}, "Other": {"b": 2}, "EventType": "X"}', "invalid_event"),
    (b'{"version": "4.0", "eventType": "NewFileUpload"}', "invalid_event"),
    (b'{"version": "4.0", "eventType": "NewFileUpload", "data": {}}', "invalid_event"),
    # Identity: the fields the event type and the dedup key are made of.
    (b'{"EventType": "EditMediaComplete", "EditMediaCompleteEvent": {"TaskId": {"a": 1}}}', "invalid_event"),
    (b'{"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": [1.5]}}', "invalid_event"),
    (b'{"EventType": "FileDeleted", "FileDeleteEvent": {"FileIdSet": {"FileId": "1"}}}', "invalid_event"),
    (b'{"version": "4.0", "eventType": 7, "data": {"fileId": "1"}}', "invalid_event"),
    (b'{"version": "4.0", "eventType": "NewFileUpload", "data": []}', "invalid_event"),
    (b'{"version": "4.0", "eventType": "NewFileUpload", "data": {"fileId": [1]}}', "invalid_event"),
    (b'{"version": "4.0", "eventType": "PullComplete", "data": {"vodTaskId": 5.5}}', "invalid_event"),
    (b'{"version": "4.0", "eventType": "FileDeleted", "data": {"fileInfo": [{"fileId": null}]}}', "invalid_event"),
]


@pytest.mark.parametrize("body, reason", BAD_BODIES, ids=[r + ":" + b[:30].decode("latin-1") for b, r in BAD_BODIES])
def test_bad_bodies_are_refused_with_a_reason(body, reason):
    with pytest.raises(Refusal) as caught:
        events.parse(body)
    assert caught.value.reason == reason
    assert caught.value.message
    assert 400 <= caught.value.status < 500


def test_schema_refusal_names_the_field():
    with pytest.raises(Refusal) as caught:
        events.parse(b'{"EventType": "NewFileUpload", "FileUploadEvent": {"ProcedureTaskId": ""}}')
    assert "FileId" in caught.value.message
    assert caught.value.details == {"FileUploadEvent": {"FileId": ["Missing data for required field."]}}


def _upload(**task):
    return json.dumps({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": "1", **task}}).encode()


# The field checks live in the field classes (schemas.py); these are the words they must keep.
# None of these fields is identity: the event is kept, without the field, and the warning says why.
FIELD_PROBLEMS = [
    (_upload(TaskId="\x00" * 300), "FileUploadEvent.TaskId",
     "Must not contain NUL characters. Longer than maximum length 256."),
    (_upload(ProcedureTaskId="\ud800"), "FileUploadEvent.ProcedureTaskId",
     "Must be valid Unicode (no lone surrogates)."),
    (_upload(MediaBasicInfo={"Type": "\u00e9" * 65}), "FileUploadEvent.MediaBasicInfo.Type",
     "Longer than maximum length 64."),
    (_upload(MediaBasicInfo={"SourceInfo": {"SourceType": 5}}),
     "FileUploadEvent.MediaBasicInfo.SourceInfo.SourceType", "Not a valid string."),
    (_upload(MediaBasicInfo={"CreateTime": "9999-12-31T23:59:59-01:00"}),
     "FileUploadEvent.MediaBasicInfo.CreateTime", "Must be a time between the years 1 and 9999 in UTC."),
    (_upload(MediaBasicInfo={"CreateTime": "yesterday"}), "FileUploadEvent.MediaBasicInfo.CreateTime",
     "Not a valid datetime."),
    (_upload(MetaData={"Width": 2**31}), "FileUploadEvent.MetaData.Width",
     "Must be greater than or equal to 0 and less than or equal to 2147483647."),
    (_upload(MetaData={"Width": -1}), "FileUploadEvent.MetaData.Width",
     "Must be greater than or equal to 0 and less than or equal to 2147483647."),
    (_upload(MetaData={"Duration": 1e13}), "FileUploadEvent.MetaData.Duration",
     "Must be greater than or equal to 0 and less than or equal to 1000000000000.0."),
    (_upload(MetaData=[]), "FileUploadEvent.MetaData", "Invalid input type."),
    (b'{"version": "9", "eventType": "NewFileUpload", "data": {"fileId": "1"}}', "version",
     "Must be one of: 4.0, 4, 4, 4.0."),
]


@pytest.mark.parametrize("body, field, problem", FIELD_PROBLEMS, ids=[f for _, f, _ in FIELD_PROBLEMS])
def test_odd_non_identity_field_is_left_out_with_a_warning_in_the_same_words(body, field, problem):
    parsed = events.parse(body)
    assert parsed.fields["file_id"] == "1"
    assert parsed.warnings == [{"field": field, "problem": problem, "stored": "nothing"}]


def test_an_object_with_one_odd_field_keeps_the_others():
    fields = events.parse(_upload(MediaBasicInfo={"Name": "n", "CreateTime": 1546000000, "ClassId": "x",
                                                  "SourceInfo": {"SourceContext": "order-1"}},
                                  MetaData={"Size": 5, "Width": "wide"})).fields
    assert (fields["media_name"], fields["source_context"], fields["size"]) == ("n", "order-1", 5)
    assert (fields["media_created_at"], fields["class_id"], fields["width"]) == (None, None, None)


def test_an_over_long_source_context_keeps_its_first_1000_characters():
    parsed = events.parse(new_file_upload("1", source_context="訂" * 999 + "x" * 600))
    assert parsed.fields["source_context"] == "訂" * 999 + "x"
    assert parsed.warnings == [{"field": "FileUploadEvent.MediaBasicInfo.SourceInfo.SourceContext",
                                "problem": "Longer than maximum length 1000.",
                                "stored": "the first 1000 characters"}]


def test_a_single_object_where_a_list_belongs_is_a_list_of_one():
    body = {"version": "4.0", "eventType": "FileDeleted", "data": {"fileInfo": {"fileId": "24961954183381008"}}}
    parsed = events.parse(json.dumps(body).encode())
    assert parsed.fields["file_ids"] == ["24961954183381008"]
    assert parsed.dedup_key == events.parse(sample("v2-filedeleted.json")).dedup_key
    assert parsed.warnings == [{"field": "data.fileInfo", "problem": "Not a valid list.",
                                "stored": "as a list of one"}]


def test_valid_bodies_have_no_warnings():
    for _name, body in callback_samples():
        assert events.parse(body).warnings == []


def test_identity_refusal_names_the_field_and_ignores_odd_others():
    body = {"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": {"id": 1}, "MetaData": []}}
    with pytest.raises(Refusal) as caught:
        events.parse(json.dumps(body).encode())
    assert caught.value.message == ("The NewFileUpload data under 'FileUploadEvent' is invalid: "
                                    "FileUploadEvent.FileId: Must be a string or an integer.")
    assert caught.value.details == {"FileUploadEvent": {"FileId": ["Must be a string or an integer."]}}


def test_a_second_utf8_bom_is_refused_as_json_loads_words_it():
    with pytest.raises(Refusal) as caught:
        events.parse(b"\xef\xbb\xbf\xef\xbb\xbf{}")
    assert caught.value.message == ("The body is not valid JSON: Unexpected UTF-8 BOM "
                                    "(decode using utf-8-sig): line 1 column 1 (char 0).")


def test_utf8_bom_is_tolerated():
    assert events.parse(b"\xef\xbb\xbf" + sample("v3-push-newfileupload.json")).event_type == "NewFileUpload"


def test_input_of_another_shape_does_not_refuse_the_event():
    body = {"EventType": "SplitMediaComplete", "SplitMediaCompleteEvent": {"TaskId": "s-1", "Input": ["a", "b"]}}
    assert events.parse(json.dumps(body).encode()).fields["task_id"] == "s-1"
