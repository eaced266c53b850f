"""VOD's API 3.0 as the emulator answers it: TC3 verification, then ApplyUpload, CommitUpload, DescribeMediaInfos
(and, from queue.py, the reliable callback and event config).

Every answer is HTTP 200 with `{"Response": {..., "RequestId"}}`; errors put `Error{Code, Message}`
in the Response (vod-spec §7.6) — the Python SDK treats any other status as a network error.
"""
import hmac
import json
import logging
import re
import secrets
import uuid
from datetime import datetime, timezone

from werkzeug.wrappers import Request, Response

from . import events
from .signing import parse_tc3_authorization, tc3_canonical_request, tc3_date, tc3_signature
from .state import Credential, Media, Session

log = logging.getLogger(__name__)

API_VERSION = "2018-07-17"
SERVICE = "vod"
MAX_BODY = 10 * 1024 * 1024  # API 3.0's POST limit
MAX_SKEW = 300  # seconds between X-TC-Timestamp and the server's clock before SignatureExpire
MAX_SOURCE_CONTEXT = 250
MAX_SESSION_CONTEXT = 1000
MAX_FILE_IDS = 20
NEVER = "9999-12-31T23:59:59Z"
# What ApplyUpload takes as MediaType and CoverType (the upload guide's format list, cn 266/9760);
# compared case-insensitively, as VOD does.
MEDIA_TYPES = frozenset("""
    wmv rm mov mpeg mp4 3gp flv avi rmvb ts asf mpg webm mkv m3u8 wm m4v mpd dat ogg vob
    mp3 m4a flac wav amr aac wma ogg mka
    jpg jpeg png gif bmp tiff ai cdr eps
""".split())
COVER_TYPES = frozenset("jpg jpeg png gif bmp tiff ai cdr eps".split())
_KINDS = {str: "a string", int: "an integer", list: "an array of strings"}
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+){1,3}")
_ISO_8601 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


class ApiError(Exception):
    """An API 3.0 error: answered as Response.Error with HTTP 200."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def handle(emulator, request: Request) -> Response:
    """Answer one API 3.0 request (POST / with X-TC-Action)."""
    action = request.headers.get("X-TC-Action", "")
    emulator.state.count(action or "(no action)")
    try:
        if not action:
            raise ApiError("MissingParameter", "The request is missing a required parameter `Action`.")
        if action not in ACTIONS:
            raise ApiError("InvalidAction", f"The action `{action}` does not exist (the emulator "
                           f"answers {', '.join(sorted(ACTIONS))}).")
        if request.headers.get("X-TC-Version") != API_VERSION:
            raise ApiError("NoSuchVersion", f"The API version `{request.headers.get('X-TC-Version')}` "
                           f"does not exist; VOD's is {API_VERSION}.")
        if (request.content_length or 0) > MAX_BODY:
            raise ApiError("RequestSizeLimitExceeded", f"The request body exceeds {MAX_BODY} bytes.")
        payload = request.get_data(cache=False) if request.method == "POST" else b""
        _authenticate(emulator, request, payload)
        params = _params(request, payload)
        result = ACTIONS[action](emulator, params)
    except ApiError as exc:
        result = {"Error": {"Code": exc.code, "Message": exc.message}}
    except Exception:  # an emulator bug: answered as VOD answers its own, and logged for us
        log.exception("VOD emulator: %s failed", action)
        result = {"Error": {"Code": "InternalError", "Message": "Internal error (see the emulator's log)."}}
    result["RequestId"] = str(uuid.uuid4())
    body = json.dumps({"Response": result}, ensure_ascii=False).encode("utf-8")
    # Exactly "application/json": the SDK looks for Response.Error only under that content type.
    return Response(body, 200, content_type="application/json")


def _authenticate(emulator, request, payload):
    auth = parse_tc3_authorization(request.headers.get("Authorization", ""))
    if auth is None:
        raise ApiError("AuthFailure.InvalidAuthorization",
                       "The Authorization header is missing or not TC3-HMAC-SHA256 "
                       "Credential=…, SignedHeaders=…, Signature=….")
    try:
        timestamp = int(request.headers.get("X-TC-Timestamp", ""))
    except ValueError:
        raise ApiError("MissingParameter", "X-TC-Timestamp is missing or not a Unix time.") from None
    secret_id, _, scope = auth["Credential"].partition("/")
    if secret_id != emulator.secret_id:
        raise ApiError("AuthFailure.SecretIdNotFound",
                       f"The SecretId {secret_id!r} is not found; the emulator's is {emulator.secret_id!r}.")
    now = emulator.clock()
    if abs(now - timestamp) > MAX_SKEW:
        raise ApiError("AuthFailure.SignatureExpire",
                       f"The signature expired: X-TC-Timestamp {timestamp} is {int(now - timestamp)} s "
                       f"from the server's time {int(now)}; at most {MAX_SKEW} s are allowed.")
    if scope != f"{tc3_date(timestamp)}/{SERVICE}/tc3_request":
        raise ApiError("AuthFailure.SignatureFailure",
                       f"The credential scope {scope!r} should be "
                       f"{tc3_date(timestamp)}/{SERVICE}/tc3_request.")
    names = [name for name in auth["SignedHeaders"].split(";") if name]
    if not {"content-type", "host"} <= set(names):
        raise ApiError("AuthFailure.SignatureFailure", "SignedHeaders must include content-type and host.")
    query = request.query_string.decode("latin-1") if request.method == "GET" else ""
    canonical = tc3_canonical_request(request.method, query,
                                      [(name, request.headers.get(name, "")) for name in names], payload)
    expected = tc3_signature(emulator.secret_key, SERVICE, timestamp, canonical)
    if not hmac.compare_digest(expected, auth["Signature"]):
        raise ApiError("AuthFailure.SignatureFailure",
                       "The provided credentials could not be validated. Please check your signature is correct.")


def _params(request, payload):
    if request.method == "GET":
        params = {}
        for name, value in request.args.items(multi=True):
            base, _, index = name.rpartition(".")
            if base and index.isdigit():  # FileIds.0=…&FileIds.1=… is the query form of an array
                params.setdefault(base, []).append(value)
            else:
                params[name] = value
        return params
    try:
        params = json.loads(payload or b"{}")
    except ValueError:
        raise ApiError("InvalidParameter", "The request body is not valid JSON.") from None
    if not isinstance(params, dict):
        raise ApiError("InvalidParameter", "The request body must be a JSON object.")
    return params


def _check(params, spec):
    """Params against {name: (type, required)}: unknown, missing and ill-typed ones are refused."""
    for name in params:
        if name not in spec:
            raise ApiError("UnknownParameter", f"The parameter `{name}` is not recognized.")
    for name, (kind, required) in spec.items():
        value = params.get(name)
        if value is None:
            if required:
                raise ApiError("MissingParameter", f"The request is missing a required parameter `{name}`.")
            continue
        if kind is int and isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value):
            params[name] = value = int(value)  # the GET form sends numbers as text
        ok = (isinstance(value, list) and all(isinstance(v, str) for v in value)) if kind is list \
            else isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise ApiError("InvalidParameter", f"The parameter `{name}` should be {_KINDS[kind]}.")


def _check_sub_app(emulator, params):
    sub_app_id = params.get("SubAppId")
    if sub_app_id is not None and emulator.sub_app_id is not None and sub_app_id != emulator.sub_app_id:
        raise ApiError("InvalidParameterValue.SubAppId",
                       f"SubAppId {sub_app_id} is not this account's application ({emulator.sub_app_id}).")
    return sub_app_id if sub_app_id is not None else emulator.sub_app_id


def apply_upload(emulator, params):
    """ApplyUpload: a session, its storage paths and a temporary COS key scoped to them."""
    _check(params, {"MediaType": (str, True), "SubAppId": (int, False), "MediaName": (str, False),
                    "CoverType": (str, False), "Procedure": (str, False), "ExpireTime": (str, False),
                    "StorageRegion": (str, False), "ClassId": (int, False), "SourceContext": (str, False),
                    "SessionContext": (str, False), "ExtInfo": (str, False), "MediaStoragePath": (str, False)})
    sub_app_id = _check_sub_app(emulator, params)
    media_type = params["MediaType"].lower()
    if media_type not in MEDIA_TYPES:
        raise ApiError("InvalidParameterValue.MediaType", f"MediaType {params['MediaType']!r} is not a "
                       "media type VOD takes (e.g. mp4, flv, mov, mp3, jpg).")
    cover_type = params.get("CoverType")
    if cover_type is not None and cover_type.lower() not in COVER_TYPES:
        raise ApiError("InvalidParameterValue.CoverType", f"CoverType {cover_type!r} is not an image type "
                       "VOD takes (e.g. jpg, png).")
    source_context = params.get("SourceContext") or ""
    if len(source_context) > MAX_SOURCE_CONTEXT:
        raise ApiError("InvalidParameterValue.SourceContextTooLong",
                       f"SourceContext has {len(source_context)} characters; at most {MAX_SOURCE_CONTEXT}.")
    session_context = params.get("SessionContext") or ""
    if len(session_context) > MAX_SESSION_CONTEXT:
        raise ApiError("InvalidParameterValue.SessionContextTooLong",
                       f"SessionContext has {len(session_context)} characters; at most {MAX_SESSION_CONTEXT}.")
    for name, text in (("SourceContext", source_context), ("SessionContext", session_context)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: it could not be pushed back
            raise ApiError(f"InvalidParameterValue.{name}", f"{name} is not valid Unicode text.") from None
    expire_time = params.get("ExpireTime") or NEVER
    if "ExpireTime" in params and not _ISO_8601.fullmatch(expire_time):
        raise ApiError("InvalidParameter.ExpireTime", f"ExpireTime {expire_time!r} is not an ISO 8601 "
                       "date and time such as 2030-01-01T00:00:00Z.")
    region = params.get("StorageRegion") or emulator.storage_region
    if not _REGION.fullmatch(region):
        raise ApiError("InvalidParameterValue.StorageRegion", f"StorageRegion {region!r} is not a region.")
    class_id = params.get("ClassId", 0)
    if class_id < 0:
        raise ApiError("InvalidParameterValue.ClassId", f"ClassId {class_id} does not exist.")
    storage_path = params.get("MediaStoragePath")
    if storage_path is not None and not storage_path.startswith("/"):
        raise ApiError("InvalidParameterValue.MediaStoragePath", "MediaStoragePath must start with `/`.")

    now = emulator.clock()
    folder = f"/{secrets.token_hex(4)}/{secrets.token_hex(8)}"
    media_path = storage_path or f"{folder}/f0.{media_type}"
    cover_path = f"{folder}/cover.{cover_type.lower()}" if cover_type else None
    session_key = secrets.token_urlsafe(96)
    credential = Credential(
        secret_id="AKIDtmp" + secrets.token_hex(14), secret_key=secrets.token_urlsafe(24),
        token=secrets.token_urlsafe(120), expired_time=int(now) + emulator.temp_credential_seconds,
        bucket=emulator.bucket, region=region,
        keys=frozenset(p.lstrip("/") for p in (media_path, cover_path) if p), session_key=session_key)
    media_name = params.get("MediaName") or media_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    emulator.state.add_session(Session(
        session_key=session_key, bucket=emulator.bucket, region=region, media_key=media_path.lstrip("/"),
        cover_key=cover_path.lstrip("/") if cover_path else None, media_type=media_type,
        media_name=media_name, cover_type=cover_type, procedure=params.get("Procedure") or "",
        source_context=source_context, session_context=session_context, class_id=class_id,
        expire_time=expire_time, sub_app_id=sub_app_id, credential_id=credential.secret_id,
        created_at=now), credential)
    return {"StorageBucket": emulator.bucket, "StorageRegion": region, "VodSessionKey": session_key,
            "MediaStoragePath": media_path, "CoverStoragePath": cover_path,
            "TempCertificate": {"SecretId": credential.secret_id, "SecretKey": credential.secret_key,
                                "Token": credential.token, "ExpiredTime": credential.expired_time}}


def commit_upload(emulator, params):
    """CommitUpload: the uploaded object becomes a media file; its NewFileUpload event goes out."""
    _check(params, {"VodSessionKey": (str, True), "SubAppId": (int, False)})
    _check_sub_app(emulator, params)
    session = emulator.state.session(params["VodSessionKey"])
    if session is None:
        raise ApiError("InvalidParameterValue.VodSessionKey", "VodSessionKey is not a session ApplyUpload issued.")
    if session.file_id is not None:
        # VOD's session is spent after one commit; a retried CommitUpload whose first answer was
        # lost sees this error, not the FileId again.
        raise ApiError("InvalidParameterValue.VodSessionKey",
                       f"VodSessionKey was already committed (FileId {session.file_id}).")
    obj = emulator.state.object(session.bucket, session.media_key)
    if obj is None:
        raise ApiError("ResourceNotFound.FileNotExist",
                       f"Nothing was uploaded to {session.bucket}/{session.media_key} (MediaStoragePath) "
                       "before CommitUpload.")
    cover = emulator.state.object(session.bucket, session.cover_key) if session.cover_key else None
    file_id = emulator.new_file_id()
    created = _iso(emulator.clock())
    media = Media(
        file_id=file_id, name=session.media_name, type=session.media_type, size=obj.size,
        digest=obj.digest, md5=obj.md5, source_context=session.source_context,
        session_context=session.session_context, procedure=session.procedure,
        procedure_task_id=f"{emulator.app_id}-procedurev2-{uuid.uuid4().hex}" if session.procedure else "",
        class_id=session.class_id, storage_region=session.region, bucket=session.bucket,
        key=session.media_key, media_url=emulator.media_url(file_id, session.media_key),
        cover_url=emulator.media_url(file_id, session.cover_key) if cover else "",
        cover_key=session.cover_key if cover else None, create_time=created,
        expire_time=session.expire_time, sub_app_id=session.sub_app_id, session_key=session.session_key)
    if not emulator.state.commit(session, media):
        raise ApiError("InvalidParameterValue.VodSessionKey", "VodSessionKey was already committed.")
    emulator.dispatcher.publish(events.new_file_upload(media), committing=True)
    return {"FileId": file_id, "MediaUrl": media.media_url, "CoverUrl": media.cover_url or None}


def describe_media_infos(emulator, params):
    """DescribeMediaInfos: BasicInfo and MetaData of each FileId, and the FileIds VOD does not have."""
    _check(params, {"FileIds": (list, True), "Filters": (list, False), "SubAppId": (int, False)})
    _check_sub_app(emulator, params)
    file_ids = params["FileIds"]
    if not file_ids:
        raise ApiError("InvalidParameterValue.FileIdsEmpty", "FileIds is empty.")
    if len(file_ids) > MAX_FILE_IDS:
        raise ApiError("InvalidParameterValue.FileIdsTooMany", f"At most {MAX_FILE_IDS} FileIds per call.")
    filters = set(params.get("Filters") or ["basicInfo", "metaData"])
    known = emulator.state.media
    found, missing = [], []
    for file_id in dict.fromkeys(file_ids):  # a FileId asked twice is answered once
        media = known.get(file_id)
        if media is None:
            missing.append(file_id)
            continue
        info = {"FileId": file_id}
        if "basicInfo" in filters:
            info["BasicInfo"] = events.basic_info(media)
        if "metaData" in filters:
            info["MetaData"] = events.meta_data(media)
        found.append(info)
    return {"MediaInfoSet": found, "NotExistFileIdSet": missing}


ACTIONS = {"ApplyUpload": apply_upload, "CommitUpload": commit_upload,
           "DescribeMediaInfos": describe_media_infos}

# The reliable-callback and event-config actions live in queue.py (it uses this module's helpers).
from .queue import ACTIONS as _QUEUE_ACTIONS  # noqa: E402

ACTIONS.update(_QUEUE_ACTIONS)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(int(timestamp), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
