"""The slice of COS's XML API that uploads with VOD's temporary key use, as cos-python-sdk-v5 speaks it.

Requests reach the emulator at 127.0.0.1 with `Host: <bucket>.cos.<region>.myqcloud.com`
(CosConfig(IP=…, Port=…), vod-spec §8.3). Each is checked like COS checks a temporary key:
q-sign signature made with its SecretKey, `x-cos-security-token`, expiry, and the key's scope
(the session's storage paths). Bodies stream to disk; errors are COS's XML with its status codes.
"""
import base64
import hashlib
import hmac
import logging
import re
import uuid
from datetime import datetime, timezone
from urllib.parse import quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from .signing import cos_signature, parse_cos_authorization

log = logging.getLogger(__name__)

HOST = re.compile(r"(?P<bucket>[a-z0-9][a-z0-9-]*)\.cos\.(?P<region>[a-z0-9-]+)\.myqcloud\.com(:\d+)?")
MIN_PART = 1024 * 1024  # every part but the last must be at least 1 MB (COS's rule)
MAX_PART_NUMBER = 10000
MAX_COMPLETE_XML = 4 * 1024 * 1024
# A body of an error answer is read and thrown away up to this size so the keep-alive connection
# stays usable; a larger one closes the connection instead.
DRAIN_LIMIT = 64 * 1024 * 1024


class CosError(Exception):
    """A COS error: its HTTP status, Code and Message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def handle(emulator, request: Request, bucket: str, region: str) -> Response:
    """Answer one COS request for `bucket` in `region`."""
    request_id = uuid.uuid4().hex
    key = _key(request)
    operation = _operation(request, key)
    emulator.state.count(operation)
    try:
        if not emulator.state.bucket_known(bucket, region):
            raise CosError(404, "NoSuchBucket", "The specified bucket does not exist.")
        credential = _authenticate(emulator, request, key)
        _authorize(emulator, credential, bucket, region, operation, key, request)
        response = OPERATIONS[operation](emulator, request, bucket, key)
    except Exception as exc:
        if not isinstance(exc, CosError):  # an emulator bug: COS's 500, and the traceback in our log
            log.exception("VOD emulator: COS %s failed", operation)
            exc = CosError(500, "InternalError", "We encountered an internal error. Please try again.")
        response = _error(exc, f"{bucket}.cos.{region}.myqcloud.com/{key}", request_id)
        _drain(request, response)
    response.headers["x-cos-request-id"] = request_id
    return response


def _key(request):
    # PATH_INFO arrives percent-decoded as latin-1 text; the key is its UTF-8 reading.
    return request.environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace").lstrip("/")


def _operation(request, key):
    args, method = request.args, request.method
    if not key:
        return "ListMultipartUploads" if method == "GET" and "uploads" in args else f"{method} Bucket"
    if method == "PUT":
        if "x-cos-copy-source" in request.headers:  # a copy reads another object: not an upload key's
            return "UploadPartCopy" if "uploadId" in args else "PutObjectCopy"
        return "UploadPart" if "uploadId" in args else "PutObject"
    if method == "POST":
        if "uploads" in args:
            return "InitiateMultipartUpload"
        return "CompleteMultipartUpload" if "uploadId" in args else "PostObject"
    if method == "GET":
        return "ListParts" if "uploadId" in args else "GetObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in args else "DeleteObject"
    return "HeadObject" if method == "HEAD" else f"{method} Object"


def _authenticate(emulator, request, key):
    auth = parse_cos_authorization(request.headers.get("Authorization", ""))
    if auth is None:
        raise CosError(403, "AccessDenied", "Access Denied. The request carries no valid q-sign Authorization.")
    credential = emulator.state.credential(auth["q-ak"])
    if credential is None:
        raise CosError(403, "InvalidAccessKeyId", "The Access Key Id you provided does not exist in our records "
                       "(the emulator knows the temporary SecretIds ApplyUpload issued).")
    now = emulator.clock()
    token = request.headers.get("x-cos-security-token")
    if token is None:
        raise CosError(403, "InvalidAccessKeyId", "A temporary key needs its token in x-cos-security-token.")
    if not hmac.compare_digest(token.encode(), credential.token.encode()):
        raise CosError(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")
    if now >= credential.expired_time:
        raise CosError(400, "ExpiredToken", f"The provided token has expired (ExpiredTime "
                       f"{credential.expired_time}); call ApplyUpload again.")
    try:
        start, end = (int(t) for t in auth["q-sign-time"].split(";"))
    except ValueError:
        raise CosError(403, "AccessDenied", "q-sign-time is not start;end in Unix seconds.") from None
    if not start - 60 <= now <= end:  # a minute's grace for the client's clock, as the SDK signs from now-60
        raise CosError(403, "AccessDenied", "Request has expired (q-sign-time).")
    names = [n for n in auth["q-header-list"].split(";") if n]
    headers = {name: request.headers.get(unquote(name), "") for name in names}
    sent = {}
    for name, value in request.args.items(multi=True):
        sent.setdefault(quote(name.encode(), safe="-_.~").lower(), value)
    params = {name: sent.get(name, "") for name in auth["q-url-param-list"].split(";") if name}
    expected = cos_signature(credential.secret_key, auth["q-key-time"], request.method, "/" + key, params, headers)
    if not hmac.compare_digest(expected, auth["q-signature"]):
        raise CosError(403, "SignatureDoesNotMatch", "The calculated signature does not match the one provided "
                       "(q-sign with the temporary SecretKey).")
    if "host" not in names:
        raise CosError(403, "AccessDenied", "The signature must cover the Host header.")
    return credential


def _authorize(emulator, credential, bucket, region, operation, key, request):
    # VOD's temporary key allows uploads to its own session's storage paths, nothing else.
    if credential.bucket != bucket or credential.region != region:
        raise CosError(403, "AccessDenied", "Access Denied. The temporary key is for another bucket.")
    if operation == "ListMultipartUploads":
        if request.args.get("prefix", "") not in credential.keys:
            raise CosError(403, "AccessDenied", "Access Denied. List uploads with prefix= the storage path.")
        return
    if operation not in OPERATIONS:
        raise CosError(403, "AccessDenied", f"Access Denied. {operation} is not allowed with VOD's upload key.")
    if key not in credential.keys:
        raise CosError(403, "AccessDenied", f"Access Denied. The temporary key may write only "
                       f"{', '.join(sorted(credential.keys))}, not {key}.")


def put_object(emulator, request, bucket, key):
    """PUT Object: the body, streamed to disk, becomes the object."""
    stored = emulator.state.write_stream(_body(request), request.content_length)
    _check_md5(request, stored)
    obj = emulator.state.put_object(bucket, key, stored, request.headers.get("Content-Type", ""), emulator.clock())
    return Response(b"", 200, headers={"ETag": obj.etag})


def initiate_multipart_upload(emulator, request, bucket, key):
    """Initiate Multipart Upload: a new UploadId."""
    upload = emulator.state.start_upload(bucket, key, request.headers.get("Content-Type", ""), emulator.clock())
    return _xml("InitiateMultipartUploadResult",
                [("Bucket", bucket), ("Key", key), ("UploadId", upload.upload_id)])


def upload_part(emulator, request, bucket, key):
    """Upload Part: one part, streamed to disk; its ETag is the quoted MD5."""
    upload = _upload(emulator, request, bucket, key)
    try:
        number = int(request.args.get("partNumber", ""))
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PART_NUMBER:
        raise CosError(400, "InvalidArgument", f"partNumber must be 1..{MAX_PART_NUMBER}.")
    stored = emulator.state.write_stream(_body(request), request.content_length, sha256=False)
    _check_md5(request, stored)
    part = emulator.state.put_part(upload.upload_id, number, stored, emulator.clock())
    if part is None:
        raise CosError(404, "NoSuchUpload", "The specified upload does not exist (completed or aborted meanwhile).")
    return Response(b"", 200, headers={"ETag": part.etag})


def list_parts(emulator, request, bucket, key):
    """List Parts: the parts so far, paged by part-number-marker and max-parts."""
    upload = _upload(emulator, request, bucket, key)
    marker = _int_arg(request, "part-number-marker", 0)
    limit = min(max(_int_arg(request, "max-parts", 1000), 1), 1000)
    with emulator.state.lock:
        parts = sorted((p for p in upload.parts.values() if p.number > marker), key=lambda p: p.number)
    page, truncated = parts[:limit], len(parts) > limit
    encode = _encoder(request)
    fields = [("Bucket", bucket), ("Encoding-type", request.args.get("encoding-type", "")), ("Key", encode(key)),
              ("UploadId", upload.upload_id), ("Initiator", _owner(emulator)), ("Owner", _owner(emulator)),
              ("PartNumberMarker", str(marker)), ("StorageClass", "STANDARD"), ("MaxParts", str(limit)),
              ("IsTruncated", "true" if truncated else "false")]
    if page:
        fields.append(("NextPartNumberMarker", str(page[-1].number)))
    fields += [("Part", [("PartNumber", str(p.number)), ("LastModified", _iso(p.last_modified)),
                         ("ETag", p.etag), ("Size", str(p.size))]) for p in page]
    return _xml("ListPartsResult", fields)


def list_multipart_uploads(emulator, request, bucket, key):
    """List Multipart Uploads: uploads in progress under `prefix` (how upload_file finds one to resume)."""
    prefix = request.args.get("prefix", "")
    limit = min(max(_int_arg(request, "max-uploads", 1000), 1), 1000)
    uploads = emulator.state.uploads_for(bucket, prefix)
    page = uploads[:limit]
    encode = _encoder(request)
    fields = [("Bucket", bucket), ("Encoding-Type", request.args.get("encoding-type", "")),
              ("KeyMarker", ""), ("UploadIdMarker", ""),
              ("NextKeyMarker", encode(page[-1].key) if page else ""),
              ("NextUploadIdMarker", page[-1].upload_id if page else ""),
              ("MaxUploads", str(limit)), ("IsTruncated", "true" if len(uploads) > limit else "false"),
              ("Prefix", encode(prefix)), ("Delimiter", "")]
    fields += [("Upload", [("Key", encode(u.key)), ("UploadId", u.upload_id), ("StorageClass", "STANDARD"),
                           ("Initiator", _owner(emulator)), ("Owner", _owner(emulator)),
                           ("Initiated", _iso(u.initiated))]) for u in page]
    return _xml("ListMultipartUploadsResult", fields)


def complete_multipart_upload(emulator, request, bucket, key):
    """Complete Multipart Upload: the listed parts, checked, become the object."""
    upload = _upload(emulator, request, bucket, key)
    if (request.content_length or 0) > MAX_COMPLETE_XML:
        raise CosError(400, "EntityTooLarge", "The CompleteMultipartUpload body is too large.")
    try:
        root = ElementTree.fromstring(request.get_data(cache=False))
        listed = [(int(p.findtext("PartNumber")), (p.findtext("ETag") or "").strip())
                  for p in root.iter("Part")]
    except (ElementTree.ParseError, TypeError, ValueError):
        raise CosError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
    if not listed:
        raise CosError(400, "MalformedXML", "CompleteMultipartUpload lists no Part.")
    numbers = [n for n, _ in listed]
    if numbers != sorted(set(numbers)):
        raise CosError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
    # Checked and ended under one lock: a part re-sent meanwhile can neither slip in unchecked
    # nor delete a file the assembly below is about to read.
    with emulator.state.lock:
        parts = []
        for number, etag in listed:
            part = upload.parts.get(number)
            if part is None or etag.strip('"') != part.md5:
                raise CosError(400, "InvalidPart", f"Part {number} was not uploaded or its ETag does not match.")
            parts.append(part)
        for part in parts[:-1]:
            if part.size < MIN_PART:
                raise CosError(400, "EntityTooSmall", f"Part {part.number} is {part.size} bytes; every part "
                               f"but the last must be at least {MIN_PART}.")
        if emulator.state.finish_upload(upload.upload_id) is None:
            raise CosError(404, "NoSuchUpload", "The specified upload does not exist.")
    stored = emulator.state.assemble(parts)
    etag = '"%s-%d"' % (hashlib.md5(b"".join(bytes.fromhex(p.md5) for p in parts)).hexdigest(), len(parts))
    emulator.state.put_object(bucket, key, stored, upload.content_type, emulator.clock(), etag=etag,
                              parts=len(parts))
    emulator.state.drop_upload_files(upload)
    return _xml("CompleteMultipartUploadResult",
                [("Location", f"{request.host.split(':')[0]}/{key}"), ("Bucket", bucket), ("Key", key), ("ETag", etag)])


def abort_multipart_upload(emulator, request, bucket, key):
    """Abort Multipart Upload: the upload and its parts are deleted."""
    upload = _upload(emulator, request, bucket, key)
    if emulator.state.finish_upload(upload.upload_id) is None:
        raise CosError(404, "NoSuchUpload", "The specified upload does not exist.")
    emulator.state.drop_upload_files(upload)
    return Response(b"", 204)


def head_object(emulator, request, bucket, key):
    """HEAD Object: size, ETag and type of an object."""
    obj = _object(emulator, bucket, key)
    return Response(b"", 200, headers=_object_headers(obj))


def get_object(emulator, request, bucket, key):
    """GET Object: the object's bytes, streamed from disk."""
    obj = _object(emulator, bucket, key)
    return stream_file(obj.path, obj.size, _object_headers(obj))


OPERATIONS = {"PutObject": put_object, "InitiateMultipartUpload": initiate_multipart_upload,
              "UploadPart": upload_part, "ListParts": list_parts, "ListMultipartUploads": list_multipart_uploads,
              "CompleteMultipartUpload": complete_multipart_upload,
              "AbortMultipartUpload": abort_multipart_upload, "HeadObject": head_object, "GetObject": get_object}


def stream_file(path, size, headers) -> Response:
    """A response sending a file in chunks."""
    def chunks():
        with open(path, "rb") as source:
            while chunk := source.read(1 << 20):
                yield chunk

    response = Response(chunks(), 200, headers=headers, direct_passthrough=True)
    response.headers["Content-Length"] = str(size)
    return response


def _object_headers(obj):
    return {"ETag": obj.etag, "Content-Type": obj.content_type or "application/octet-stream",
            "Last-Modified": datetime.fromtimestamp(obj.last_modified, timezone.utc)
            .strftime("%a, %d %b %Y %H:%M:%S GMT"), "x-cos-storage-class": "STANDARD"}


def _object(emulator, bucket, key):
    obj = emulator.state.object(bucket, key)
    if obj is None:
        raise CosError(404, "NoSuchKey", "The specified key does not exist.")
    return obj


def _upload(emulator, request, bucket, key):
    upload = emulator.state.upload(request.args.get("uploadId", ""))
    if upload is None or upload.bucket != bucket or upload.key != key:
        raise CosError(404, "NoSuchUpload", "The specified upload does not exist.")
    return upload


def _body(request):
    # werkzeug's stream is bounded by Content-Length (or ends with a chunked body), so reading
    # it in chunks never buffers the whole upload.
    return request.stream


def _check_md5(request, stored):
    sent = request.headers.get("Content-MD5")
    if sent and sent != base64.b64encode(bytes.fromhex(stored.md5)).decode():
        stored.path.unlink(missing_ok=True)
        raise CosError(400, "BadDigest", "The Content-MD5 you specified did not match what was received.")


def _int_arg(request, name, default):
    try:
        return int(request.args.get(name, default))
    except ValueError:
        raise CosError(400, "InvalidArgument", f"{name} must be an integer.") from None


def _encoder(request):
    # encoding-type=url: keys come back percent-encoded and the SDK decodes them.
    if request.args.get("encoding-type") == "url":
        return lambda text: quote(text.encode("utf-8"), safe="/-_.~")
    return lambda text: text


def _owner(emulator):
    return [("ID", f"qcs::cam::uin/{emulator.app_id}:uin/{emulator.app_id}"), ("DisplayName", str(emulator.app_id))]


def _iso(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _render(fields):
    out = []
    for name, value in fields:
        inner = _render(value) if isinstance(value, list) else escape(value)
        out.append(f"<{name}>{inner}</{name}>")
    return "".join(out)


def _xml(root, fields, status=200):
    body = f"<?xml version='1.0' encoding='utf-8' ?>\n<{root}>{_render(fields)}</{root}>"
    return Response(body.encode("utf-8"), status, content_type="application/xml")


def _error(exc: CosError, resource, request_id):
    return _xml("Error", [("Code", exc.code), ("Message", exc.message), ("Resource", resource),
                          ("RequestId", request_id), ("TraceId", uuid.uuid4().hex)], exc.status)


def _drain(request, response):
    # An error may be answered before the body was read: read the rest so the client's next
    # request on this keep-alive connection does not start in the middle of this body.
    left = request.content_length
    if left is None or left > DRAIN_LIMIT:
        response.headers["Connection"] = "close"
        return
    try:
        stream = request.stream
        while stream.read(1 << 20):
            pass
    except Exception:  # a client that hung up: nothing left to keep in step
        response.headers["Connection"] = "close"
