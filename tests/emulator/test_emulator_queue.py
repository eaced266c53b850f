"""The reliable callback and event config through Tencent's own SDK: PullEvents, ConfirmEvents,
DescribeEventsState, DescribeEventConfig and ModifyEventConfig with VOD's semantics."""
import json
import threading
import time

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vod.v20180717 import models

from emulator_clients import apply_upload, commit_upload, cos_for, listener, vod_for  # noqa: F401 (fixtures)
from receiver.emulator import Emulator
from receiver.emulator.events import mixed_events, sample_bodies


@pytest.fixture
def emu(tmp_path):
    """An emulator in Mode PULL with a 1 s handle window and a 1 s long poll."""
    with Emulator(storage_dir=tmp_path / "vod", mode="PULL", event_handle_seconds=1.0,
                  long_poll_seconds=1.0) as emulator:
        yield emulator


@pytest.fixture
def vod(emu):
    return vod_for(emu)


def _pull(vod, **fields):
    request = models.PullEventsRequest()
    for name, value in fields.items():
        setattr(request, name, value)
    return json.loads(vod.call("PullEvents", request._serialize()))["Response"]


def _confirm(vod, handles):
    request = models.ConfirmEventsRequest()
    request.EventHandles = handles
    return vod.ConfirmEvents(request)


def _code(call):
    with pytest.raises(TencentCloudSDKException) as caught:
        call()
    return caught.value.code


def _state(vod):
    return vod.DescribeEventsState(models.DescribeEventsStateRequest()).CountOfEventsToPull


def test_pull_hands_out_at_most_16_events_each_with_a_handle_and_confirm_removes_them(emu, vod):
    bodies = mixed_events(20)
    for body in bodies:
        emu.enqueue(body)
    assert _state(vod) == 20

    first = _pull(vod)["EventSet"]

    assert len(first) == 16
    assert [{k: v for k, v in e.items() if k != "EventHandle"} for e in first] == bodies[:16]
    handles = [e["EventHandle"] for e in first]
    assert len(set(handles)) == 16
    assert emu.event_queue.snapshot() == {"depth": 4, "in_flight": 16, "confirmed": 0,
                                          "deliveries": 16, "redeliveries": 0}
    _confirm(vod, handles)
    assert emu.event_queue.snapshot()["confirmed"] == 16
    assert len(_pull(vod)["EventSet"]) == 4
    assert _state(vod) == 0


def test_pull_answers_as_soon_as_an_event_arrives_and_an_empty_one_after_the_long_poll(emu, vod):
    started = time.monotonic()
    assert _pull(vod)["EventSet"] == []
    assert 0.9 <= time.monotonic() - started < 3

    emu.long_poll_seconds = 5.0
    later = threading.Timer(0.2, emu.enqueue, args=(mixed_events(1)[0],))
    later.start()
    started = time.monotonic()
    assert len(_pull(vod)["EventSet"]) == 1
    assert time.monotonic() - started < 4  # woken by the event, not by the 5 s poll running out
    later.join()


def test_an_unconfirmed_event_comes_back_under_a_new_handle_and_its_old_handle_is_refused(emu, vod):
    emu.enqueue(mixed_events(1)[0])
    [first] = _pull(vod)["EventSet"]

    emu.event_queue.wait(lambda q: q.depth == 1, timeout=10)  # the 1 s window ran out
    [again] = _pull(vod)["EventSet"]

    assert again["EventHandle"] != first["EventHandle"]
    assert {**again, "EventHandle": None} == {**first, "EventHandle": None}
    assert emu.event_queue.redeliveries == 1
    assert _code(lambda: _confirm(vod, [first["EventHandle"]])) == "InvalidParameterValue"
    _confirm(vod, [again["EventHandle"]])
    assert emu.event_queue.snapshot()["confirmed"] == 1


def test_confirm_with_one_unknown_handle_confirms_none(emu, vod):
    for body in mixed_events(2):
        emu.enqueue(body)
    handles = [e["EventHandle"] for e in _pull(vod)["EventSet"]]
    assert _code(lambda: _confirm(vod, [*handles, "no-such-handle"])) == "InvalidParameterValue"
    assert emu.event_queue.in_flight == 2
    assert _code(lambda: _confirm(vod, [])) == "MissingParameter"
    assert _code(lambda: _confirm(vod, ["h"] * 17)) == "InvalidParameterValue"


def test_every_sample_body_goes_through_the_queue_unchanged(emu, vod):
    bodies = [body for _name, body in sample_bodies()]
    for body in bodies:
        emu.enqueue(body)
    pulled = []
    while len(pulled) < len(bodies):
        pulled += _pull(vod)["EventSet"]
    assert [{k: v for k, v in e.items() if k != "EventHandle"} for e in pulled] == bodies


def test_an_upload_in_pull_mode_is_queued_not_pushed(emu, vod, listener):
    emu.callback_url = listener.url
    applied = apply_upload(vod, SourceContext="pull-ctx")
    cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"x")
    file_id = commit_upload(vod, applied.VodSessionKey).FileId

    [event] = _pull(vod)["EventSet"]

    assert event["EventType"] == "NewFileUpload" and event["FileUploadEvent"]["FileId"] == file_id
    assert event["FileUploadEvent"]["MediaBasicInfo"]["SourceInfo"]["SourceContext"] == "pull-ctx"
    assert emu.state.pushes == [] and listener.requests == []


def test_modify_event_config_switches_mode_url_and_switches(emu, vod):
    request = models.ModifyEventConfigRequest()
    request.Mode, request.NotificationUrl, request.UploadMediaCompleteEventSwitch = "PUSH", "https://r.example/cb", "OFF"
    vod.ModifyEventConfig(request)

    config = vod.DescribeEventConfig(models.DescribeEventConfigRequest())
    assert (config.Mode, config.NotificationUrl, config.UploadMediaCompleteEventSwitch,
            config.DeleteMediaCompleteEventSwitch) == ("PUSH", "https://r.example/cb", "OFF", "OFF")
    assert emu.callback_url == "https://r.example/cb"

    clear = models.ModifyEventConfigRequest()
    clear.NotificationUrl = ""
    vod.ModifyEventConfig(clear)
    assert vod.DescribeEventConfig(models.DescribeEventConfigRequest()).NotificationUrl == ""


def test_an_upload_whose_switch_is_off_produces_no_event(emu, vod):
    request = models.ModifyEventConfigRequest()
    request.UploadMediaCompleteEventSwitch = "OFF"
    vod.ModifyEventConfig(request)
    applied = apply_upload(vod)
    cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"x")
    commit_upload(vod, applied.VodSessionKey)
    assert emu.state.events == [] and _state(vod) == 0


@pytest.mark.parametrize("fields, code", [
    ({"Mode": "POLL"}, "InvalidParameterValue.Mode"),
    ({"NotificationUrl": "ftp://x"}, "InvalidParameterValue.NotificationUrl"),
    ({"UploadMediaCompleteEventSwitch": "YES"}, "InvalidParameterValue"),
    ({"SignKey": "not-alnum!"}, "InvalidParameterValue.SignKey"),
    ({"SignKey": "k" * 33}, "InvalidParameterValue.SignKey"),
])
def test_modify_event_config_refuses_bad_values(vod, fields, code):
    request = models.ModifyEventConfigRequest()
    for name, value in fields.items():
        setattr(request, name, value)
    assert _code(lambda: vod.ModifyEventConfig(request)) == code


def test_a_sign_key_set_by_modify_event_config_signs_pushes(emu, vod, listener):
    request = models.ModifyEventConfigRequest()
    request.Mode, request.NotificationUrl, request.SignKey = "PUSH", listener.url, "Key2026"
    vod.ModifyEventConfig(request)
    applied = apply_upload(vod)
    cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"x")
    commit_upload(vod, applied.VodSessionKey)
    listener.wait(1)
    [body] = listener.json()
    assert body["EventType"] == "NewFileUpload" and body["Sign"] and body["T"]


def test_a_wrong_sub_app_id_is_refused(tmp_path):
    with Emulator(storage_dir=tmp_path / "vod", sub_app_id=1500000001, mode="PULL",
                  long_poll_seconds=0.1) as emulator:
        assert _code(lambda: _pull(vod_for(emulator), SubAppId=1500000002)) == "InvalidParameterValue.SubAppId"
        assert _pull(vod_for(emulator), SubAppId=1500000001)["EventSet"] == []
