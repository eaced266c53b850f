"""The two signatures, against the published TC3 test vector and the COS SDK's own signer."""
import hashlib

import requests
from qcloud_cos import CosConfig
from qcloud_cos.cos_auth import CosS3Auth

from receiver.emulator.signing import (cos_signature, parse_cos_authorization, parse_tc3_authorization,
                                       tc3_canonical_request, tc3_date, tc3_signature)


def test_tc3_matches_the_api_guides_test_vector():
    canonical = tc3_canonical_request(
        "GET", "Limit=10&Offset=0",
        [("content-type", "application/x-www-form-urlencoded"), ("host", "cvm.tencentcloudapi.com")], b"")
    assert hashlib.sha256(canonical.encode()).hexdigest() == \
        "91c9c192c14460df6c1ffc69e34e6c5e90708de2a6d282cccf957dbf1aa7f3a7"
    assert tc3_date(1539084154) == "2018-10-09"
    assert tc3_signature("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "cvm", 1539084154, canonical) == \
        "5da7a33f6993f0614b047e5df4582db9e9bf4672ba50567dba16c6ccf174c474"


def test_tc3_changes_with_the_key_and_the_body():
    canonical = tc3_canonical_request("POST", "", [("content-type", "application/json"), ("host", "h")], b"{}")
    other_body = tc3_canonical_request("POST", "", [("content-type", "application/json"), ("host", "h")], b"{ }")
    base = tc3_signature("key", "vod", 1700000000, canonical)
    assert tc3_signature("key2", "vod", 1700000000, canonical) != base
    assert tc3_signature("key", "vod", 1700000000, other_body) != base


def test_tc3_authorization_is_parsed_and_other_schemes_are_not():
    fields = parse_tc3_authorization("TC3-HMAC-SHA256 Credential=AKID/2018-10-09/vod/tc3_request, "
                                     "SignedHeaders=content-type;host, Signature=abc")
    assert fields == {"Credential": "AKID/2018-10-09/vod/tc3_request", "SignedHeaders": "content-type;host",
                      "Signature": "abc"}
    assert parse_tc3_authorization("HMAC-SHA256 Credential=x") is None
    assert parse_tc3_authorization("TC3-HMAC-SHA256 Credential=x, Signature=y") is None


def test_cos_signature_equals_what_the_sdk_signs():
    conf = CosConfig(Region="ap-guangzhou", SecretId="AKIDtmp", SecretKey="tmp-secret", Token="tok")
    params = {"partNumber": "3", "uploadId": "u p/1"}
    prepared = requests.Request(
        "PUT", "http://127.0.0.1:1/dir/%E4%B8%AD.mp4", params=params, data=b"abc",
        headers={"Host": "b-1250000000.cos.ap-guangzhou.myqcloud.com", "x-cos-security-token": "tok"},
        auth=CosS3Auth(conf, "dir/中.mp4", params=params)).prepare()
    auth = parse_cos_authorization(prepared.headers["Authorization"])
    assert auth["q-ak"] == "AKIDtmp"
    headers = {"host": "b-1250000000.cos.ap-guangzhou.myqcloud.com", "content-length": "3",
               "x-cos-security-token": "tok"}
    assert auth["q-header-list"] == ";".join(sorted(headers))
    assert auth["q-url-param-list"] == "partnumber;uploadid"
    mine = cos_signature("tmp-secret", auth["q-key-time"], "PUT", "/dir/中.mp4",
                         {"partnumber": "3", "uploadid": "u p/1"}, headers)
    assert mine == auth["q-signature"]
    assert cos_signature("wrong", auth["q-key-time"], "PUT", "/dir/中.mp4",
                         {"partnumber": "3", "uploadid": "u p/1"}, headers) != auth["q-signature"]
