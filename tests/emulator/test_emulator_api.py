"""API 3.0 through Tencent's own SDK: the upload flow, DescribeMediaInfos, and every error VOD would give."""
import hashlib
import json
import time
import urllib.request

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vod.v20180717 import models

from emulator_clients import apply_upload, commit_upload, cos_for, emu, vod, vod_for  # noqa: F401 (fixtures)
from receiver.emulator import Emulator


def _code(call):
    with pytest.raises(TencentCloudSDKException) as caught:
        call()
    assert caught.value.requestId, "every answer carries a RequestId"
    return caught.value.code


def test_apply_put_commit_creates_the_media_with_its_bytes_and_context(emu, vod):
    context = "订单-42 ✓ \"quoted\""
    applied = apply_upload(vod, MediaName="Animal World", CoverType="jpg", SourceContext=context, ClassId=3)
    assert applied.MediaStoragePath.startswith("/") and applied.CoverStoragePath.startswith("/")
    assert applied.TempCertificate.ExpiredTime > time.time() + 1700
    cos = cos_for(emu, applied)
    media, cover = b"\x00video" * 5000, b"jpeg-bytes"
    cos.put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=media)
    cos.put_object(Bucket=applied.StorageBucket, Key=applied.CoverStoragePath, Body=cover)

    committed = commit_upload(vod, applied.VodSessionKey)

    assert committed.FileId.isdigit() and int(committed.FileId) > 2**53
    record = emu.state.media[committed.FileId]
    assert (record.size, record.sha256) == (len(media), hashlib.sha256(media).hexdigest())
    assert (record.source_context, record.name, record.class_id) == (context, "Animal World", 3)
    assert record.procedure_task_id == ""
    with urllib.request.urlopen(committed.MediaUrl, timeout=5) as answer:
        assert answer.read() == media
    with urllib.request.urlopen(committed.CoverUrl, timeout=5) as answer:
        assert answer.read() == cover
    assert emu.state.requests["PutObject"] == 2
    assert emu.state.requests["ApplyUpload"] == emu.state.requests["CommitUpload"] == 1


def test_commit_without_a_cover_has_no_cover_url_and_procedure_gets_a_task_id(emu, vod):
    applied = apply_upload(vod, Procedure="LongVideoPreset")
    cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"x")
    committed = commit_upload(vod, applied.VodSessionKey)
    assert applied.CoverStoragePath is None and committed.CoverUrl is None
    assert emu.state.media[committed.FileId].procedure_task_id


def test_describe_media_infos_answers_known_and_unknown_file_ids(emu, vod):
    applied = apply_upload(vod, SourceContext="ctx")
    cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"12345")
    file_id = commit_upload(vod, applied.VodSessionKey).FileId
    request = models.DescribeMediaInfosRequest()
    request.FileIds = [file_id, "5285890784273533167"]

    answer = vod.DescribeMediaInfos(request)

    assert answer.NotExistFileIdSet == ["5285890784273533167"]
    (info,) = answer.MediaInfoSet
    assert info.FileId == file_id
    assert info.BasicInfo.SourceInfo.SourceContext == "ctx"
    assert info.BasicInfo.Type == "mp4" and info.MetaData.Size == 5


def test_describe_media_infos_refuses_an_empty_or_too_long_list(vod):
    request = models.DescribeMediaInfosRequest()
    request.FileIds = []
    assert _code(lambda: vod.DescribeMediaInfos(request)) == "InvalidParameterValue.FileIdsEmpty"
    request.FileIds = [str(n) for n in range(21)]
    assert _code(lambda: vod.DescribeMediaInfos(request)) == "InvalidParameterValue.FileIdsTooMany"


@pytest.mark.parametrize("fields, code", [
    ({"MediaType": None}, "MissingParameter"),
    ({"MediaType": "exe"}, "InvalidParameterValue.MediaType"),
    ({"CoverType": "txt"}, "InvalidParameterValue.CoverType"),
    ({"SourceContext": "x" * 251}, "InvalidParameterValue.SourceContextTooLong"),
    ({"SessionContext": "y" * 1001}, "InvalidParameterValue.SessionContextTooLong"),
    ({"ExpireTime": "tomorrow"}, "InvalidParameter.ExpireTime"),
    ({"StorageRegion": "Mars"}, "InvalidParameterValue.StorageRegion"),
    ({"ClassId": -1}, "InvalidParameterValue.ClassId"),
])
def test_apply_upload_refuses_bad_parameters(vod, fields, code):
    assert _code(lambda: apply_upload(vod, **fields)) == code


def test_the_longest_contexts_are_taken(vod):
    apply_upload(vod, SourceContext="字" * 250, SessionContext="y" * 1000)


def test_sub_app_id_must_be_the_emulators(tmp_path):
    with Emulator(storage_dir=tmp_path, sub_app_id=1500000001) as emulator:
        vod = vod_for(emulator)
        assert _code(lambda: apply_upload(vod, SubAppId=1500000002)) == "InvalidParameterValue.SubAppId"
        apply_upload(vod, SubAppId=1500000001)


def test_wrong_secret_key_is_a_signature_failure(emu):
    vod = vod_for(emu, secret_key="not-the-key")
    assert _code(lambda: apply_upload(vod)) == "AuthFailure.SignatureFailure"


def test_unknown_secret_id_is_not_found(emu):
    vod = vod_for(emu, secret_id="AKIDsomeoneelse")
    assert _code(lambda: apply_upload(vod)) == "AuthFailure.SecretIdNotFound"


@pytest.mark.parametrize("skew", [301, -301])
def test_a_timestamp_over_five_minutes_off_is_expired(emu, vod, skew):
    emu.clock = lambda: time.time() + skew
    assert _code(lambda: apply_upload(vod)) == "AuthFailure.SignatureExpire"
    emu.clock = lambda: time.time() + skew - (5 if skew > 0 else -5)
    apply_upload(vod)


def test_commit_upload_errors(emu, vod):
    assert _code(lambda: commit_upload(vod, "no-such-session")) == "InvalidParameterValue.VodSessionKey"
    applied = apply_upload(vod)
    assert _code(lambda: commit_upload(vod, applied.VodSessionKey)) == "ResourceNotFound.FileNotExist"
    cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"x")
    commit_upload(vod, applied.VodSessionKey)
    assert _code(lambda: commit_upload(vod, applied.VodSessionKey)) == "InvalidParameterValue.VodSessionKey"
    assert len(emu.state.media) == 1


def test_unknown_action_and_unknown_parameter(vod):
    assert _code(lambda: vod.call_json("DeleteEverything", {})) == "InvalidAction"
    assert _code(lambda: vod.call_json("ApplyUpload", {"MediaType": "mp4", "Colour": "red"})) == "UnknownParameter"
    assert _code(lambda: vod.call_json("ApplyUpload", {"MediaType": 4})) == "InvalidParameter"


def test_errors_come_with_http_200_and_the_vod_error_shape(emu):
    request = urllib.request.Request(f"http://{emu.api_endpoint}/", data=b"{}", method="POST",
                                     headers={"X-TC-Action": "ApplyUpload", "X-TC-Version": "2018-07-17",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/json"
        body = json.load(answer)
    assert body["Response"]["Error"]["Code"] == "AuthFailure.InvalidAuthorization"
    assert body["Response"]["Error"]["Message"]
    assert body["Response"]["RequestId"]


def test_the_sdks_get_form_is_verified_and_read_too(emu):
    vod = vod_for(emu, method="GET")
    applied = apply_upload(vod, SourceContext="via GET", ClassId=2)
    assert emu.state.sessions[applied.VodSessionKey].class_id == 2
    cos_for(emu, applied).put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"g")
    file_id = commit_upload(vod, applied.VodSessionKey).FileId
    request = models.DescribeMediaInfosRequest()
    request.FileIds = [file_id, "1"]
    answer = vod.DescribeMediaInfos(request)
    assert [i.FileId for i in answer.MediaInfoSet] == [file_id] and answer.NotExistFileIdSet == ["1"]
    assert _code(lambda: apply_upload(vod_for(emu, secret_key="wrong", method="GET"))) == "AuthFailure.SignatureFailure"
