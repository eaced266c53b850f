"""COS through cos-python-sdk-v5: multipart uploads, resuming one, and the errors a temporary key meets."""
import hashlib
import os
import time

import pytest
from qcloud_cos.cos_exception import CosServiceError

from emulator_clients import apply_upload, commit_upload, cos_for, emu, vod  # noqa: F401 (fixtures)
from receiver.emulator import Emulator

MB = 1024 * 1024


@pytest.fixture
def applied(vod):
    """An ApplyUpload answer."""
    return apply_upload(vod)


@pytest.fixture
def big_file(tmp_path):
    """A file of 5.5 MB: six parts of 1 MB, the last one half full."""
    path = tmp_path / "big.mp4"
    path.write_bytes(os.urandom(5 * MB + MB // 2))
    return path


def _error(call):
    with pytest.raises(CosServiceError) as caught:
        call()
    return caught.value.get_status_code(), caught.value.get_error_code()


def test_upload_file_sends_parts_and_commit_sees_the_whole_file(emu, vod, applied, big_file):
    cos_for(emu, applied).upload_file(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath,
                                      LocalFilePath=str(big_file), PartSize=1, MAXThread=3)
    requests = emu.state.requests
    assert (requests["ListMultipartUploads"], requests["InitiateMultipartUpload"], requests["UploadPart"],
            requests["CompleteMultipartUpload"]) == (1, 1, 6, 1)
    assert emu.state.uploads == {}, "a completed upload is no longer in progress"
    file_id = commit_upload(vod, applied.VodSessionKey).FileId
    media = emu.state.media[file_id]
    assert media.size == big_file.stat().st_size
    assert media.sha256 == hashlib.sha256(big_file.read_bytes()).hexdigest()
    obj = emu.state.objects[(applied.StorageBucket, applied.MediaStoragePath.lstrip("/"))]
    assert obj.parts == 6 and obj.etag.endswith('-6"')


def test_upload_file_resumes_an_upload_in_progress_and_sends_only_missing_parts(emu, applied, big_file):
    cos = cos_for(emu, applied)
    bucket, key, data = applied.StorageBucket, applied.MediaStoragePath.lstrip("/"), big_file.read_bytes()
    upload_id = cos.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    for number in (1, 2, 4):
        cos.upload_part(Bucket=bucket, Key=key, Body=data[(number - 1) * MB:number * MB], PartNumber=number,
                        UploadId=upload_id)
    assert sorted(emu.state.uploads[upload_id].parts) == [1, 2, 4]

    cos.upload_file(Bucket=bucket, Key=applied.MediaStoragePath, LocalFilePath=str(big_file), PartSize=1)

    requests = emu.state.requests
    assert requests["InitiateMultipartUpload"] == 1, "the upload in progress was found, not a new one made"
    assert requests["ListParts"] == 1
    assert requests["UploadPart"] == 3 + 3, "parts 3, 5 and 6 only"
    assert emu.state.read_object(bucket, key) == data


def test_a_part_that_differs_from_the_local_file_makes_a_fresh_upload(emu, applied, big_file):
    cos = cos_for(emu, applied)
    bucket, key = applied.StorageBucket, applied.MediaStoragePath.lstrip("/")
    upload_id = cos.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    cos.upload_part(Bucket=bucket, Key=key, Body=b"z" * MB, PartNumber=1, UploadId=upload_id)

    cos.upload_file(Bucket=bucket, Key=key, LocalFilePath=str(big_file), PartSize=1)

    assert emu.state.requests["InitiateMultipartUpload"] == 2
    assert emu.state.read_object(bucket, key) == big_file.read_bytes()
    assert list(emu.state.uploads) == [upload_id], "the stale upload stays until aborted"


def test_list_parts_pages_with_the_marker(emu, applied):
    cos = cos_for(emu, applied)
    bucket, key = applied.StorageBucket, applied.MediaStoragePath
    upload_id = cos.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    for number in (1, 2, 3):
        cos.upload_part(Bucket=bucket, Key=key, Body=b"p%d" % number, PartNumber=number, UploadId=upload_id)
    first = cos.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=2)
    assert [p["PartNumber"] for p in first["Part"]] == ["1", "2"] and first["IsTruncated"] == "true"
    rest = cos.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=first["NextPartNumberMarker"])
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in rest["Part"]] == \
        [("3", '"%s"' % hashlib.md5(b"p3").hexdigest(), "2")]
    assert rest["IsTruncated"] == "false"


def test_abort_removes_the_upload(emu, applied):
    cos = cos_for(emu, applied)
    bucket, key = applied.StorageBucket, applied.MediaStoragePath
    upload_id = cos.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    cos.upload_part(Bucket=bucket, Key=key, Body=b"x", PartNumber=1, UploadId=upload_id)
    cos.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    assert emu.state.uploads == {}
    assert _error(lambda: cos.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)) == (404, "NoSuchUpload")
    assert _error(lambda: cos.upload_part(Bucket=bucket, Key=key, Body=b"x", PartNumber=2,
                                          UploadId=upload_id)) == (404, "NoSuchUpload")


def test_complete_checks_etags_and_part_sizes(emu, applied):
    cos = cos_for(emu, applied)
    bucket, key = applied.StorageBucket, applied.MediaStoragePath
    upload_id = cos.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = [cos.upload_part(Bucket=bucket, Key=key, Body=b"small%d" % n, PartNumber=n, UploadId=upload_id)["ETag"]
             for n in (1, 2)]
    wrong = {"Part": [{"PartNumber": 1, "ETag": '"0123"'}]}
    assert _error(lambda: cos.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                        MultipartUpload=wrong)) == (400, "InvalidPart")
    small = {"Part": [{"PartNumber": n, "ETag": etag} for n, etag in zip((1, 2), etags)]}
    assert _error(lambda: cos.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                        MultipartUpload=small)) == (400, "EntityTooSmall")
    only_last = {"Part": [{"PartNumber": 2, "ETag": etags[1]}]}
    cos.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload=only_last)
    assert emu.state.read_object(bucket, key.lstrip("/")) == b"small2"


def test_a_wrong_token_is_refused(emu, applied):
    cos = cos_for(emu, applied, Token="not-the-token")
    assert _error(lambda: cos.put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath,
                                         Body=b"x")) == (400, "InvalidToken")


def test_no_token_is_refused(emu, applied):
    cos = cos_for(emu, applied, Token=None)
    assert _error(lambda: cos.put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath,
                                         Body=b"x")) == (403, "InvalidAccessKeyId")


def test_a_wrong_secret_key_does_not_match(emu, applied):
    cos = cos_for(emu, applied, SecretKey="not-the-secret")
    assert _error(lambda: cos.put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath,
                                         Body=b"x" * 100_000)) == (403, "SignatureDoesNotMatch")
    assert emu.state.objects == {}


def test_an_unknown_secret_id_is_refused(emu, applied):
    cos = cos_for(emu, applied, SecretId="AKIDunknown")
    assert _error(lambda: cos.put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath,
                                         Body=b"x")) == (403, "InvalidAccessKeyId")


def test_the_key_may_write_only_its_own_paths(emu, vod, applied):
    cos = cos_for(emu, applied)
    other = apply_upload(vod)
    for key in ("elsewhere.mp4", other.MediaStoragePath):
        assert _error(lambda: cos.put_object(Bucket=applied.StorageBucket, Key=key, Body=b"x")) == \
            (403, "AccessDenied")
    assert _error(lambda: cos.list_multipart_uploads(Bucket=applied.StorageBucket, Prefix="")) == \
        (403, "AccessDenied")


def test_an_unknown_bucket_does_not_exist(emu, applied):
    cos = cos_for(emu, applied)
    assert _error(lambda: cos.put_object(Bucket="nobody-1250000000", Key=applied.MediaStoragePath,
                                         Body=b"x")) == (404, "NoSuchBucket")


def test_an_expired_temporary_key_is_refused(tmp_path):
    with Emulator(storage_dir=tmp_path, temp_credential_seconds=1) as emulator:
        from emulator_clients import vod_for

        applied = apply_upload(vod_for(emulator))
        cos = cos_for(emulator, applied)
        cos.put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath, Body=b"in time")
        emulator.clock = lambda: time.time() + 2
        assert _error(lambda: cos.put_object(Bucket=applied.StorageBucket, Key=applied.MediaStoragePath,
                                             Body=b"late")) == (400, "ExpiredToken")


def test_operations_an_upload_key_may_not_do_are_denied(emu, applied):
    cos = cos_for(emu, applied)
    bucket, key = applied.StorageBucket, applied.MediaStoragePath
    cos.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert _error(lambda: cos.delete_object(Bucket=bucket, Key=key)) == (403, "AccessDenied")
    source = {"Bucket": bucket, "Key": key.lstrip("/"), "Region": applied.StorageRegion}
    assert _error(lambda: cos.copy_object(Bucket=bucket, Key=key, CopySource=source)) == (403, "AccessDenied")
    assert emu.state.requests["DeleteObject"] == emu.state.requests["PutObjectCopy"] == 1
