import json

import pytest

from receiver import drift, events

from conftest import SAMPLES


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("v3-push-*.json")))
def test_documented_samples_carry_no_unknown_fields(sample):
    assert events.parse((SAMPLES / sample).read_bytes()).unknown_fields == ()


def test_new_fields_are_reported_as_dotted_paths():
    document = json.loads((SAMPLES / "v3-push-newfileupload.json").read_bytes())
    data = document["FileUploadEvent"]
    data["Surprise"] = 1
    data["MediaBasicInfo"]["Shiny"] = "x"
    data["MediaBasicInfo"]["SourceInfo"]["Origin"] = "y"
    data["MetaData"] = {"Size": 1, "Hdr": True}

    assert drift.unknown_fields("NewFileUpload", data) == (
        "Surprise", "MediaBasicInfo.Shiny", "MediaBasicInfo.SourceInfo.Origin", "MetaData.Hdr")


def test_types_without_a_list_are_checked_against_the_common_task_fields():
    data = {"TaskId": "t", "Status": "FINISH", "Output": {}, "Brand": "new"}

    assert drift.unknown_fields("SplitMediaComplete", data) == ("Brand",)


def test_a_body_with_many_new_fields_reports_a_bounded_number():
    data = {f"Field{i:04}": i for i in range(1000)}

    assert len(drift.unknown_fields("NewFileUpload", data)) == drift.MAX_REPORTED
