"""Server-side upload to VOD (ApplyUpload -> COS -> CommitUpload), recorded in `uploads`.

Every upload carries a SourceContext (given, or a generated correlation key), so the
NewFileUpload callback it causes can be found again whichever arrives first: the callback or
CommitUpload's answer. The row is written with ApplyUpload's answer (or the failure) and moved
on after each step, so a run that is killed can be resumed by running it again: the row is
found by the file (path, size, mtime, and SHA-256 once known), ApplyUpload's session is reused
while its temporary credentials last, and COS's own multipart resume sends only the parts it
does not have yet.
"""
import gc
import hashlib
import logging
import os
import stat
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from qcloud_cos.cos_exception import CosClientError, CosServiceError
from sqlalchemy import select, update
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.vod.v20180717 import models as vod_models

from ..models import Upload, utcnow
from .client import Client, MissingCredentials, TempCredentials, cos_retryable

log = logging.getLogger(__name__)

# VOD's limit on SourceContext, in characters (vod-spec §7.1, ApplyUpload).
SOURCE_CONTEXT_MAX = 250
# SessionContext's (the same table).
SESSION_CONTEXT_MAX = 1000
# The file extensions VOD takes as MediaType (Tencent's "media upload overview", cn 266/9760):
# video, audio, image, subtitle. Checked here so a typo fails before a session is opened.
MEDIA_TYPES = frozenset("""
    wmv rm mov mpeg mp4 3gp flv avi rmvb ts asf mpg webm mkv m3u8 mpd wm asx ram mpe vob dat
    mp4v m4v f4v mxf qt odg mp3 m4a flac ogg wav amr aac wma mka
    jpg jpeg png gif bmp tiff ai cdr eps srt vtt""".split())
COVER_TYPES = frozenset("jpg jpeg png gif bmp tiff ai cdr eps".split())
# A session is reused only while this much of its temporary credentials' life is left: the
# remaining parts and CommitUpload must get through before COS and VOD refuse them.
RESUME_MARGIN = timedelta(seconds=60)
# Prefix of generated correlation keys: says who made it, and leaves 218 characters free.
GENERATED_PREFIX = "vodr-"
_HASH_CHUNK = 1024 * 1024
# The steps an upload fails at, in order.
STEPS = ("check", "resume", "apply", "cos", "commit")
IN_PROGRESS = ("started", "stored")
# The uploads table, written with Core statements on plain row objects: the ORM's first use in
# a process (configuring every mapper, compiling ORM statements, merge's extra SELECT) cost
# 100-250 ms per upload, more than the whole transfer of an 8 MB file.
_TABLE = Upload.__table__
_COLUMNS = tuple(column.key for column in _TABLE.columns)


class _Row:
    """One `uploads` row as the uploader holds it: an attribute per column."""

    def __init__(self, **values):
        for key in _COLUMNS:
            setattr(self, key, values.get(key))


class UploadError(Exception):
    """An upload that did not happen; `upload_id` names its failed row (None if none)."""

    def __init__(self, step, code, message, upload_id=None):
        super().__init__(message)
        self.step, self.code, self.message, self.upload_id = step, code, message, upload_id

    def __str__(self):
        where = f"upload {self.upload_id} failed" if self.upload_id else "upload failed"
        return f"{where} at {self.step}: {self.code}: {self.message}"


class UploadRefused(UploadError):
    """Refused before anything was sent: a bad file or argument, or missing credentials."""


@dataclass
class UploadResult:
    """What an upload produced: VOD's ids and URLs, the correlation key and the row."""

    upload_id: int
    file_id: str
    media_url: str
    cover_url: str | None
    source_context: str
    row: _Row = field(repr=False)
    resumed: bool = False

    @property
    def record(self) -> Upload:
        """The `uploads` row as an Upload (in no session), made when first asked for."""
        return Upload(**vars(self.row))


def generate_source_context():
    """A new unique correlation key to pass as SourceContext."""
    return GENERATED_PREFIX + uuid.uuid4().hex


def check_source_context(value):
    """Raise UploadRefused if `value` is longer than VOD takes."""
    if value is not None and len(value) > SOURCE_CONTEXT_MAX:
        raise UploadRefused("check", "SourceContextTooLong",
                            f"SourceContext is {len(value)} characters; VOD takes at most "
                            f"{SOURCE_CONTEXT_MAX}")


class Uploader:
    """Uploads files to VOD with `client`, recording each in the `uploads` table of `sessions`.

    `sessions` is a SQLAlchemy sessionmaker on the receiver's database; each step commits on
    its own, so the row shows where an upload got to even if the process dies.
    """

    def __init__(self, client: Client, sessions, notice=None):
        self.client = client
        self.sessions = sessions
        self.notice = notice or log.info
        self._engine = None

    @classmethod
    def from_url(cls, client, database_url, notice=None):
        """An Uploader recording into the database at `database_url` (migrated); close() it."""
        from sqlalchemy.orm import sessionmaker

        from ..db import make_engine

        # The uploader is not answering VOD within 5 s like the callback path: it can wait
        # for a busy SQLite writer far longer than RECEIVER_DB_TIMEOUT_MS.
        engine = make_engine(database_url, timeout_ms=30000)
        # What is loaded by now (the SDKs' modules: ~100,000 objects, most of them Tencent's
        # VOD API models) stays for the life of the process. Frozen, the collector no longer
        # walks it: a full collection falling inside an upload otherwise cost 100-500 ms,
        # more than sending an 8 MB file. Done here, where a process sets up to upload, not
        # in __init__: an application embedding the Uploader keeps its collector as it is.
        gc.freeze()
        uploader = cls(client, sessionmaker(engine, expire_on_commit=False), notice)
        uploader._engine = engine
        return uploader

    def close(self):
        """Close the database connections of an Uploader made by from_url."""
        if self._engine is not None:
            self._engine.dispose()

    def upload(self, path, *, source_context=None, procedure=None, storage_region=None,
               sub_app_id=None, class_id=None, media_name=None, media_type=None, cover=None,
               session_context=None, expire_time=None, progress=None) -> UploadResult:
        """Upload the file at `path` to VOD; resume this file's interrupted upload if there is one."""
        sub_app_id = sub_app_id if sub_app_id is not None else self.client.sub_app_id
        path = os.path.abspath(os.fspath(path))
        options = dict(procedure=procedure, storage_region=storage_region, sub_app_id=sub_app_id,
                       class_id=class_id, media_name=media_name or _stem(path),
                       media_type=(media_type or _extension(path)).lower() or None,
                       session_context=session_context, expire_time=expire_time,
                       cover_path=os.path.abspath(cover) if cover else None)
        row = self._start(path, source_context, options)
        resumed = row.resumes > 0
        # The SHA-256 is computed while the file uploads, on a thread of its own (hashlib lets
        # go of the GIL): read first, it added a whole pass over the file (seconds for 1 GB)
        # before the first byte was sent. It is stored with the step that ends the transfer.
        hashing = _Hasher(path) if row.file_sha256 is None else None
        try:
            if row.vod_session_key is None:
                self._apply(row)
            if row.state == "started":
                self._store(row, progress, hashing)
            elif progress:
                progress(row.file_size, row.file_size)
            self._commit(row, hashing)
        except (TencentCloudSDKException, CosServiceError, CosClientError, OSError) as exc:
            step = "commit" if row.state == "stored" else ("apply" if row.vod_session_key is None
                                                           else "cos")
            raise self._fail(row, step, *_describe(exc), hashing) from exc
        return UploadResult(row.id, row.file_id, row.media_url, row.cover_url,
                            row.source_context, row, resumed)

    # The steps. Each one commits, so the row is always where the upload really is.

    def _start(self, path, source_context, options):
        now = utcnow()
        row = _Row(state="started", started_at=now, updated_at=now, file_path=path,
                     file_name=os.path.basename(path), source_context=source_context,
                     source_context_generated=False, api_region=self.client.region,
                     part_size=self.client.part_size_mb * 1024 * 1024, resumes=0, **options)
        try:
            check_source_context(source_context)
            if session_context := options["session_context"]:
                if len(session_context) > SESSION_CONTEXT_MAX:
                    raise UploadRefused("check", "SessionContextTooLong",
                                        f"SessionContext is {len(session_context)} characters; "
                                        f"VOD takes at most {SESSION_CONTEXT_MAX}")
            _check_media_type(options["media_type"], path)
            try:
                self.client.check_credentials()
            except MissingCredentials as exc:
                raise UploadRefused("check", "CredentialsMissing", str(exc)) from None
            row.file_size, row.file_mtime_ns = _examine(path)
            if options["cover_path"]:
                _check_cover(options["cover_path"])
            earlier = self._resumable(row)
        except UploadRefused as exc:
            exc.upload_id = self._record_refusal(row, exc)
            raise
        if earlier is not None:
            return earlier
        if row.source_context is None:
            row.source_context, row.source_context_generated = generate_source_context(), True
        # Not inserted yet: the row is written with ApplyUpload's answer, in one commit (each
        # is an fsync). A run killed before that has sent nothing but ApplyUpload, whose
        # session no COS byte went to: a re-run starts over either way.
        return row

    def _resumable(self, new):
        # An unfinished upload of this very file with the same asks, newest first.
        with self.sessions() as session, session.begin():
            candidates = [row for row in (_Row(**values) for values in session.execute(
                select(_TABLE).where(_TABLE.c.file_path == new.file_path,
                                     _TABLE.c.file_size == new.file_size,
                                     _TABLE.c.file_mtime_ns == new.file_mtime_ns,
                                     _TABLE.c.state.in_(IN_PROGRESS))
                .order_by(_TABLE.c.id.desc())).mappings()) if _same_asks(row, new)]
            if any(row.file_sha256 is not None for row in candidates):
                # Only a resume needs the hash before sending: an earlier run that knew it is
                # resumed only if the bytes are still the same. A row without one was killed
                # before its transfer ended; COS's resume checks each part it already has
                # against the file (MD5) before keeping it, so changed bytes are sent again.
                new.file_sha256 = _sha256(new.file_path)
                candidates = [row for row in candidates
                              if row.file_sha256 in (None, new.file_sha256)]
            for row in candidates:
                now = utcnow()
                if row.vod_session_key is not None and \
                        row.session_expires_at - RESUME_MARGIN <= now:
                    # COS and VOD would refuse the old credentials: give the row up cleanly
                    # and start again from ApplyUpload.
                    _update(session, row, lambda row: _mark_failed(
                        row, "resume", "SessionExpired",
                        f"ApplyUpload's session expired at "
                        f"{row.session_expires_at:%Y-%m-%d %H:%M:%S} UTC before the "
                        "upload finished; started over", now))
                    self.notice(f"upload {row.id}: its VOD session expired; starting over")
                    if new.source_context is None:  # the upload keeps its correlation key
                        new.source_context = row.source_context
                        new.source_context_generated = row.source_context_generated
                    continue

                def resumed(row):
                    row.resumes += 1
                    row.updated_at = now
                    row.file_sha256 = row.file_sha256 or new.file_sha256

                _update(session, row, resumed)
                where = "committing" if row.state == "stored" else "resuming"
                self.notice(f"upload {row.id}: {where} the interrupted upload of {row.file_name}")
                return row
        return None

    def _apply(self, row):
        request = vod_models.ApplyUploadRequest()
        request.MediaType = row.media_type
        request.MediaName = row.media_name
        request.SourceContext = row.source_context
        for attribute, name in (("procedure", "Procedure"), ("storage_region", "StorageRegion"),
                                ("sub_app_id", "SubAppId"), ("class_id", "ClassId"),
                                ("session_context", "SessionContext"),
                                ("expire_time", "ExpireTime")):
            value = getattr(row, attribute)
            if value is not None:
                setattr(request, name, value)
        if row.cover_path:
            request.CoverType = _extension(row.cover_path).lower()
        response = self.client.call("ApplyUpload", request)
        cert = response.TempCertificate

        def opened(row):
            row.vod_session_key = response.VodSessionKey
            row.storage_bucket = response.StorageBucket
            row.cos_region = response.StorageRegion
            row.media_storage_path = response.MediaStoragePath
            row.cover_storage_path = response.CoverStoragePath
            row.temp_secret_id, row.temp_secret_key = cert.SecretId, cert.SecretKey
            row.temp_token = cert.Token
            row.session_expires_at = datetime.fromtimestamp(cert.ExpiredTime, timezone.utc)
            row.updated_at = utcnow()

        if row.id is None:
            opened(row)
            self._insert(row)
        else:
            self._save(row, opened)

    def _store(self, row, progress, hashing):
        temp = TempCredentials(row.temp_secret_id, row.temp_secret_key, row.temp_token)
        cos = self.client.cos(temp, row.cos_region)
        part_mb = max(1, row.part_size // (1024 * 1024))

        def put(local_path, storage_path, report):
            # VOD's paths start with "/"; as a COS key they must not (as vod-python-sdk does).
            key = storage_path.lstrip("/")
            cos.last_part_error = None
            try:
                cos.upload_file(Bucket=row.storage_bucket, Key=key, LocalFilePath=local_path,
                                PartSize=part_mb, MAXThread=self.client.threads,
                                progress_callback=report)
            except CosClientError:
                # upload_file says only "some upload_part fail": the part's own error says why.
                if cos.last_part_error is not None:
                    raise cos.last_part_error from None
                raise

        retrying = self.client.retry.retrying(cos_retryable)
        retrying(put, row.file_path, row.media_storage_path, progress)
        if progress and row.file_size <= part_mb * 1024 * 1024:
            progress(row.file_size, row.file_size)  # one PUT: upload_file reports nothing
        if row.cover_path and row.cover_storage_path:
            retrying(put, row.cover_path, row.cover_storage_path, None)
        sha256 = hashing.result() if hashing else row.file_sha256

        def stored(row):
            row.state, row.stored_at = "stored", utcnow()
            row.updated_at = row.stored_at
            row.file_sha256 = sha256

        self._save(row, stored)

    def _commit(self, row, hashing):
        request = vod_models.CommitUploadRequest()
        request.VodSessionKey = row.vod_session_key
        if row.sub_app_id is not None:
            request.SubAppId = row.sub_app_id
        response = self.client.call("CommitUpload", request)
        sha256 = row.file_sha256 or (hashing.result() if hashing else None)

        def committed(row):
            row.file_sha256 = sha256
            row.state, row.committed_at = "committed", utcnow()
            row.updated_at = row.committed_at
            row.file_id, row.media_url = response.FileId, response.MediaUrl
            row.cover_url = response.CoverUrl or None
            _wipe_session(row)

        self._save(row, committed)

    def _fail(self, row, step, code, message, hashing=None):
        # The hash if it is done: a failed row is never resumed, so it is not waited for.
        sha256 = row.file_sha256 or (hashing.digest if hashing else None)

        def failed(row):
            row.file_sha256 = sha256
            _mark_failed(row, step, code, message, utcnow())

        if row.id is None:  # failed at ApplyUpload: the row's first write
            failed(row)
            self._insert(row)
        else:
            self._save(row, failed)
        return UploadError(step, code, message, row.id)

    def _record_refusal(self, row, exc):
        # What was refused may not fit its column: the message says what it was.
        if row.source_context is not None and len(row.source_context) > SOURCE_CONTEXT_MAX:
            row.source_context = None
        if row.media_type is not None and len(row.media_type) > 64:
            row.media_type = row.media_type[:64]
        _mark_failed(row, exc.step, exc.code, exc.message, row.started_at)
        self._insert(row)
        return row.id

    def _insert(self, row):
        # Columns left None are left out, so the table's defaults (resumes, …) apply.
        values = {key: value for key in _COLUMNS if (value := getattr(row, key)) is not None}
        with self.sessions() as session, session.begin():
            row.id = session.execute(_TABLE.insert().values(values)).inserted_primary_key[0]

    def _save(self, row, change):
        """Apply `change` to `row` and store what it changed, in a transaction of its own."""
        # If the write fails, `row` is put back as it was: it always says what the table holds.
        before = {key: getattr(row, key) for key in _COLUMNS}
        try:
            with self.sessions() as session, session.begin():
                _update(session, row, change)
        except BaseException:
            for key, value in before.items():
                setattr(row, key, value)
            raise


def _update(session, row, change):
    # Only the columns `change` touched are written.
    before = {key: getattr(row, key) for key in _COLUMNS}
    change(row)
    changed = {key: value for key in _COLUMNS if (value := getattr(row, key)) != before[key]}
    if changed:
        session.execute(update(_TABLE).where(_TABLE.c.id == row.id).values(changed))


def _mark_failed(row, step, code, message, when):
    row.state, row.failed_step, row.failed_at, row.updated_at = "failed", step, when, when
    row.error_code, row.error_message = code, message
    _wipe_session(row)


def _wipe_session(row):
    # The temporary credentials and session key are only needed to finish the upload.
    row.vod_session_key = row.temp_secret_id = row.temp_secret_key = row.temp_token = None


def _same_asks(row, new):
    asked = ("media_type", "media_name", "procedure", "storage_region", "sub_app_id",
             "class_id", "session_context", "expire_time", "cover_path", "api_region",
             "part_size")
    if any(getattr(row, name) != getattr(new, name) for name in asked):
        return False
    # No SourceContext given this time: the earlier run's (given or generated) is reused.
    return new.source_context is None or new.source_context == row.source_context


def _examine(path):
    # Size and mtime of the file, and that it can be read: refused before anything is sent.
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise UploadRefused("check", "NotAFile", f"{path} is not a regular file")
            if info.st_size == 0:
                raise UploadRefused("check", "EmptyFile", f"{path} is empty; VOD takes no empty files")
            file.read(1)
    except FileNotFoundError:
        raise UploadRefused("check", "FileNotFound", f"{path}: no such file") from None
    except IsADirectoryError:
        raise UploadRefused("check", "NotAFile", f"{path} is a directory") from None
    except PermissionError:
        raise UploadRefused("check", "FileUnreadable", f"{path}: permission denied") from None
    except OSError as exc:
        raise UploadRefused("check", "FileUnreadable", f"{path}: {exc.strerror or exc}") from None
    return info.st_size, info.st_mtime_ns


def _sha256(path):
    # Read in chunks: memory stays flat whatever the file's size.
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise UploadRefused("check", "FileUnreadable", f"{path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


class _Hasher(threading.Thread):
    """The SHA-256 of a file, computed on a thread of its own while the file is sent."""

    def __init__(self, path):
        # A daemon: Ctrl-C ends the command at once, not after the hash of a large file.
        super().__init__(name="vodr-upload-sha256", daemon=True)
        self.path, self.digest, self.error = path, None, None
        self.start()

    def run(self):
        """Hash the file; keep the error if it cannot be read."""
        try:
            self.digest = _sha256(self.path)
        except UploadRefused as exc:
            self.error = exc

    def result(self):
        """The hex digest, once done; an OSError if the file could not be read."""
        self.join()
        if self.error is not None:
            raise OSError(self.error.message)
        return self.digest


def _check_media_type(media_type, path):
    if not media_type:
        raise UploadRefused("check", "MediaTypeMissing",
                            f"{os.path.basename(path)} has no extension: give the media type "
                            "(e.g. mp4)")
    if media_type not in MEDIA_TYPES:
        raise UploadRefused("check", "MediaTypeUnsupported",
                            f"VOD does not take media type {media_type!r} (it takes e.g. mp4, "
                            "mov, flv, mkv, mp3, jpg; see docs/upload.md)")


def _check_cover(cover_path):
    cover_type = _extension(cover_path).lower()
    if cover_type not in COVER_TYPES:
        raise UploadRefused("check", "CoverTypeUnsupported",
                            f"VOD does not take cover type {cover_type!r}")
    try:
        _examine(cover_path)
    except UploadRefused as exc:
        raise UploadRefused("check", exc.code, f"cover: {exc.message}") from None


def _describe(exc):
    """(code, message) of a VOD, COS or local error, credentials never included."""
    if isinstance(exc, TencentCloudSDKException):
        return exc.get_code() or "TencentCloudSDKException", exc.get_message() or str(exc)
    if isinstance(exc, CosServiceError):
        code = exc.get_error_code() or f"HTTP{exc.get_status_code()}"
        return code, f"COS answered {exc.get_status_code()}: {exc.get_error_msg() or code}"
    if isinstance(exc, CosClientError):
        return "CosClientError", str(exc)
    return type(exc).__name__, str(exc)


def _extension(path):
    return os.path.splitext(path)[1].lstrip(".")


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]
