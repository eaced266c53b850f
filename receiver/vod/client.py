"""Credentials, endpoints and retries for Tencent's own SDK clients: VOD's API 3.0 and COS.

Endpoints are injectable so the same code talks to Tencent or to a local emulator
(vod-spec §8): the VOD API through `HttpProfile(protocol, endpoint)`, COS through
`CosConfig(Scheme, IP, Port)`, which keeps the bucket's host name in the Host header.
"""
import ipaddress
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_exception import CosClientError, CosServiceError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717 import vod_client

# Tencent's own examples use this API region; VOD's upload APIs list Region as required, and
# the storage region is chosen separately (StorageRegion), so any valid one works.
DEFAULT_REGION = "ap-guangzhou"

# Codes that say "try again": the SDK's own for a request that never got an answer, the rate
# limit, and VOD's internal errors (vod-spec §7.6). Anything else (auth, bad parameter) fails
# the same way however often it is sent.
_RETRYABLE_CODES = ("ClientNetworkError", "ServerNetworkError", "RequestLimitExceeded",
                    "InternalError")


class MissingCredentials(Exception):
    """TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY are not both set."""


class InvalidSetting(ValueError):
    """A VOD_* setting that cannot work: an endpoint that is not host:port or a URL, a bad number."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, a retry-safe failure is tried again."""

    attempts: int = 5
    # Full jitter, growing exponentially: many uploaders hitting a rate limit together spread
    # out instead of coming back in lockstep.
    max_wait: float = 8.0
    multiplier: float = 0.5

    def retrying(self, retryable):
        """A tenacity Retrying that retries exceptions for which `retryable` is true."""
        return Retrying(retry=retry_if_exception(retryable), stop=stop_after_attempt(self.attempts),
                        wait=wait_random_exponential(multiplier=self.multiplier, max=self.max_wait),
                        reraise=True)


def vod_retryable(exc):
    """Whether a VOD API error is worth another try."""
    if not isinstance(exc, TencentCloudSDKException):
        return False
    code = exc.get_code() or ""
    return any(code == c or code.startswith(c + ".") for c in _RETRYABLE_CODES)


def cos_retryable(exc):
    """Whether a COS error is worth another try: 5xx, throttling, or no answer at all."""
    if isinstance(exc, CosServiceError):
        return exc.get_status_code() >= 500 or exc.get_status_code() == 429
    # Network errors, and upload_file's "some upload_part fail": trying again resumes the
    # multipart upload, so only the parts that failed are sent again.
    return isinstance(exc, CosClientError)


@dataclass(frozen=True)
class TempCredentials:
    """The temporary COS credentials ApplyUpload hands out for one upload."""

    secret_id: str
    secret_key: str = field(repr=False)
    token: str = field(repr=False)


class Client:
    """Credentials, API region and endpoints; builds Tencent's SDK clients from them.

    The secret key and token never appear in repr() or in any message this module writes.
    """

    def __init__(self, secret_id=None, secret_key=None, token=None, *, region=DEFAULT_REGION,
                 api_endpoint=None, cos_endpoint=None, sub_app_id=None, part_size_mb=8,
                 threads=4, retry=RetryPolicy()):
        self.secret_id = secret_id or None
        self._secret_key = secret_key or None
        self._token = token or None
        self.region = region or DEFAULT_REGION
        self.api_protocol, self.api_endpoint = _api_endpoint(api_endpoint)
        self.cos_scheme, self.cos_host, self.cos_port = _cos_endpoint(cos_endpoint)
        self.sub_app_id = sub_app_id
        # COS takes parts of 1 MB and up (the last one excepted).
        if part_size_mb < 1 or threads < 1:
            raise InvalidSetting("VOD_UPLOAD_PART_SIZE_MB and VOD_UPLOAD_THREADS must be at least 1")
        self.part_size_mb = part_size_mb
        self.threads = threads
        self.retry = retry

    @classmethod
    def from_env(cls, environ=None, **overrides):
        """A client configured by TENCENTCLOUD_* and VOD_* environment variables."""
        from .. import config

        env = os.environ if environ is None else environ
        # Read and checked through the settings table: a bad value is one line naming it.
        settings = {
            "secret_id": config.value("TENCENTCLOUD_SECRET_ID", env),
            "secret_key": config.value("TENCENTCLOUD_SECRET_KEY", env),
            "token": config.value("TENCENTCLOUD_SESSION_TOKEN", env),
            "region": config.value("VOD_REGION", env),
            "api_endpoint": config.value("VOD_API_ENDPOINT", env),
            "cos_endpoint": config.value("VOD_COS_ENDPOINT", env),
            "sub_app_id": config.value("VOD_SUB_APP_ID", env),
            "part_size_mb": config.value("VOD_UPLOAD_PART_SIZE_MB", env),
            "threads": config.value("VOD_UPLOAD_THREADS", env),
        }
        settings.update(overrides)
        return cls(**settings)

    def __repr__(self):
        return (f"Client(secret_id={self.secret_id!r}, region={self.region!r}, "
                f"api_endpoint={self.api_endpoint!r}, cos_endpoint={self.cos_endpoint!r})")

    @property
    def cos_endpoint(self):
        """The COS override as a URL, or None for Tencent's own hosts."""
        if self.cos_host is None:
            return None
        return f"{self.cos_scheme}://{self.cos_host}" + (f":{self.cos_port}" if self.cos_port else "")

    def check_credentials(self):
        """Raise MissingCredentials unless a secret id and key are configured."""
        missing = [name for name, value in (("TENCENTCLOUD_SECRET_ID", self.secret_id),
                                            ("TENCENTCLOUD_SECRET_KEY", self._secret_key))
                   if not value]
        if missing:
            raise MissingCredentials(
                f"{' and '.join(missing)} not set: VOD needs an API key (SecretId and SecretKey, "
                "plus TENCENTCLOUD_SESSION_TOKEN for a temporary key)")

    def vod(self, timeout=None):
        """Tencent's VodClient for this account, region and endpoint (`timeout`: seconds per request)."""
        self.check_credentials()
        cred = credential.Credential(self.secret_id, self._secret_key, self._token)
        http = HttpProfile(protocol=self.api_protocol, endpoint=self.api_endpoint)
        if timeout is not None:
            http.reqTimeout = timeout
        return vod_client.VodClient(cred, self.region, ClientProfile(httpProfile=http))

    def cos(self, temp: TempCredentials, cos_region):
        """A COS client signing with an upload's temporary credentials."""
        options = {}
        if self.cos_host is not None:
            options = {"Scheme": self.cos_scheme, "IP": self.cos_host, "Port": self.cos_port}
        config = CosConfig(Region=cos_region, SecretId=temp.secret_id, SecretKey=temp.secret_key,
                           Token=temp.token, **options)
        # One quick retry per request inside the SDK (a dropped connection); the patient
        # retries with backoff are ours, around the whole upload_file (upload.py).
        return PartErrorCosClient(config, retry=1)

    def call(self, action, request):
        """Send one VOD API request (e.g. "ApplyUpload"), retrying retry-safe failures."""
        client = self.vod()
        return self.retry.retrying(vod_retryable)(getattr(client, action), request)


class PartErrorCosClient(CosS3Client):
    """CosS3Client that remembers why a part failed.

    upload_file runs the parts in a thread pool that swallows their exceptions and raises a
    generic "some upload_part fail"; the code and message of the last failed part say what
    actually went wrong.
    """

    last_part_error = None

    def upload_part(self, *args, **kwargs):
        """Upload one part, remembering the error if it fails."""
        try:
            return super().upload_part(*args, **kwargs)
        except (CosServiceError, CosClientError) as exc:
            self.last_part_error = exc
            raise


def _split(value, name):
    text = value.strip()
    parts = urlsplit(text if "://" in text else f"//{text}")
    if parts.scheme not in ("", "http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise InvalidSetting(f"{name} must be host:port or http(s)://host:port, got {value!r}")
    try:
        port = parts.port
    except ValueError:
        raise InvalidSetting(f"{name} has a bad port: {value!r}") from None
    # Without a scheme: plain http on loopback (an emulator), https anywhere else.
    scheme = parts.scheme or ("http" if _loopback(parts.hostname) else "https")
    return scheme, parts.hostname, port


def _loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_endpoint(value):
    if value is None:
        return "https", None  # the SDK's own: vod.tencentcloudapi.com
    scheme, host, port = _split(value, "VOD_API_ENDPOINT")
    host = f"[{host}]" if ":" in host else host
    return scheme, host + (f":{port}" if port else "")


def _cos_endpoint(value):
    if value is None:
        return "https", None, None
    return _split(value, "VOD_COS_ENDPOINT")
