"""receiver.vod.client: credentials and endpoints from the environment, secrets kept out of sight."""
import pytest
from qcloud_cos.cos_exception import CosClientError, CosServiceError
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from receiver.vod.client import (Client, InvalidSetting, MissingCredentials, TempCredentials,
                                 cos_retryable, vod_retryable)

ENV = {"TENCENTCLOUD_SECRET_ID": "AKIDexample", "TENCENTCLOUD_SECRET_KEY": "top-secret-key",
       "TENCENTCLOUD_SESSION_TOKEN": "a-session-token"}


@pytest.mark.parametrize("value, protocol, endpoint", [
    ("127.0.0.1:9000", "http", "127.0.0.1:9000"),
    ("http://127.0.0.1:9000", "http", "127.0.0.1:9000"),
    ("localhost:9000", "http", "localhost:9000"),
    ("vod.tencentcloudapi.com", "https", "vod.tencentcloudapi.com"),
    ("https://vod.ap-shanghai-fsi.tencentcloudapi.com", "https", "vod.ap-shanghai-fsi.tencentcloudapi.com"),
])
def test_api_endpoint_reaches_the_sdk_profile(value, protocol, endpoint):
    client = Client.from_env({**ENV, "VOD_API_ENDPOINT": value})
    vod = client.vod()
    assert vod.profile.httpProfile.endpoint == endpoint
    assert vod.profile.httpProfile.scheme == protocol


def test_without_endpoints_the_sdks_use_tencents_hosts():
    client = Client.from_env(ENV)
    vod = client.vod()
    assert vod._get_endpoint() == "vod.tencentcloudapi.com"  # the SDK's default
    cos = client.cos(TempCredentials("id", "key", "token"), "ap-chongqing")
    assert cos._conf.uri("bucket-125", "a/b.mp4").startswith("https://bucket-125.cos.ap-chongqing.myqcloud.com/")


def test_cos_endpoint_keeps_the_bucket_in_the_host_header():
    client = Client.from_env({**ENV, "VOD_COS_ENDPOINT": "http://127.0.0.1:9100"})
    cos = client.cos(TempCredentials("id", "key", "token"), "ap-chongqing")
    assert cos._conf.uri("bucket-125", "a/b.mp4") == "http://127.0.0.1:9100/a/b.mp4"
    assert cos._conf.get_host("bucket-125") == "bucket-125.cos.ap-chongqing.myqcloud.com"


@pytest.mark.parametrize("value", ["ftp://x:1", "127.0.0.1:notaport", "http://h:1/path", ""])
def test_a_bad_endpoint_is_refused_naming_the_variable(value):
    if value == "":
        assert Client.from_env({**ENV, "VOD_API_ENDPOINT": value}).api_endpoint is None
        return
    with pytest.raises(InvalidSetting, match="VOD_API_ENDPOINT"):
        Client.from_env({**ENV, "VOD_API_ENDPOINT": value})


def test_region_and_sub_app_from_the_environment():
    client = Client.from_env({**ENV, "VOD_REGION": "ap-singapore", "VOD_SUB_APP_ID": "1500000000"})
    assert (client.region, client.sub_app_id) == ("ap-singapore", 1500000000)
    assert client.vod().region == "ap-singapore"


@pytest.mark.parametrize("missing", ["TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"])
def test_missing_credentials_say_which_in_one_line(missing):
    env = {k: v for k, v in ENV.items() if k != missing}
    client = Client.from_env(env)
    with pytest.raises(MissingCredentials) as info:
        client.check_credentials()
    assert missing in str(info.value) and "\n" not in str(info.value)


def test_secrets_never_show_in_repr():
    client = Client.from_env(ENV)
    text = repr(client) + repr(TempCredentials("tmpid", "tmp-secret", "tmp-token"))
    assert "AKIDexample" in text and "tmpid" in text
    for secret in ("top-secret-key", "a-session-token", "tmp-secret", "tmp-token"):
        assert secret not in text


@pytest.mark.parametrize("code, retried", [
    ("RequestLimitExceeded", True), ("RequestLimitExceeded.UinLimitExceeded", True),
    ("InternalError", True), ("InternalError.DbError", True), ("ClientNetworkError", True),
    ("ServerNetworkError", True), ("AuthFailure.SignatureFailure", False),
    ("InvalidParameterValue.MediaType", False), ("InternalErrorish", False),
])
def test_which_vod_errors_are_retried(code, retried):
    assert vod_retryable(TencentCloudSDKException(code, "m")) is retried


@pytest.mark.parametrize("error, retried", [
    (CosServiceError("PUT", {"code": "InternalError"}, 500), True),
    (CosServiceError("PUT", {"code": "SlowDown"}, 503), True),
    (CosServiceError("PUT", {"code": "AccessDenied"}, 403), False),
    (CosClientError("connection reset"), True),
])
def test_which_cos_errors_are_retried(error, retried):
    assert cos_retryable(error) is retried


@pytest.mark.parametrize("name, value", [("VOD_UPLOAD_PART_SIZE_MB", "0"), ("VOD_UPLOAD_THREADS", "0"),
                                         ("VOD_UPLOAD_THREADS", "four"), ("VOD_SUB_APP_ID", "x")])
def test_bad_numbers_are_refused_naming_the_setting(name, value):
    with pytest.raises(InvalidSetting, match=name):
        Client.from_env({**ENV, name: value})
