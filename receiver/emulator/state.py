"""What the emulator holds: sessions, temporary credentials, COS objects and uploads, media, pushes.

Everything sits behind one lock; the public properties hand out copies, so a test reads them
while the server's threads keep writing. Object and part bytes live in files under a folder
and are written as they stream in, never held whole in memory.
"""
import hashlib
import os
import shutil
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20  # copying and hashing files on disk
# Request bodies are read in smaller pieces: with several parts arriving at once, each thread's
# buffer counts, and tests run the emulator in the same process as the client they measure.
BODY_CHUNK = 256 * 1024


@dataclass
class Credential:
    """A temporary COS key ApplyUpload handed out, scoped to one session's bucket and keys."""

    secret_id: str
    secret_key: str
    token: str
    expired_time: int
    bucket: str
    region: str
    keys: frozenset
    session_key: str


@dataclass
class Session:
    """An ApplyUpload waiting for (or done with) its CommitUpload."""

    session_key: str
    bucket: str
    region: str
    media_key: str  # COS object key: MediaStoragePath without its leading "/"
    cover_key: str | None
    media_type: str
    media_name: str
    cover_type: str | None
    procedure: str
    source_context: str
    session_context: str
    class_id: int
    expire_time: str
    sub_app_id: int | None
    credential_id: str
    created_at: float
    file_id: str | None = None  # set once CommitUpload succeeded


class Digest:
    """A file's SHA-256: known when the bytes streamed in, else computed on first use and kept.

    A multipart object is assembled by the kernel without passing through Python; hashing
    1 GB in CompleteMultipartUpload would make the client wait seconds for a figure only a
    test may ask for.
    """

    def __init__(self, path: Path, value: str | None = None):
        self._path, self._value = path, value
        self._lock = threading.Lock()

    @property
    def value(self) -> str:
        """The hex SHA-256 (reads the file the first time if it was not known)."""
        with self._lock:
            if self._value is None:
                sha256 = hashlib.sha256()
                try:
                    with open(self._path, "rb") as source:
                        while chunk := source.read(CHUNK):
                            sha256.update(chunk)
                except FileNotFoundError:
                    raise RuntimeError(f"the bytes behind this SHA-256 are gone ({self._path}): read it before "
                                       "the emulator stops, or give it a storage_dir") from None
                self._value = sha256.hexdigest()
            return self._value


@dataclass
class StoredFile:
    """Bytes on disk with the digests computed while they were written (None: not computed)."""

    path: Path
    size: int
    md5: str | None
    sha256: str | None


@dataclass
class CosObject:
    """A complete COS object."""

    bucket: str
    key: str
    path: Path
    size: int
    md5: str | None  # None for a multipart object (COS gives it no MD5 either)
    digest: Digest
    etag: str  # quoted, as COS sends it; "<md5 of part md5s>-<n>" for multipart objects
    content_type: str
    last_modified: float
    parts: int | None = None

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the object's bytes."""
        return self.digest.value


@dataclass
class Part:
    """One uploaded part of a multipart upload."""

    number: int
    path: Path
    size: int
    md5: str
    last_modified: float

    @property
    def etag(self) -> str:
        """The quoted MD5 the SDK compares with its local part to resume."""
        return f'"{self.md5}"'


@dataclass
class MultipartUpload:
    """An initiated multipart upload and its parts so far."""

    upload_id: str
    bucket: str
    key: str
    initiated: float
    content_type: str
    parts: dict = field(default_factory=dict)


@dataclass
class Media:
    """A media file VOD knows after CommitUpload."""

    file_id: str
    name: str
    type: str
    size: int
    digest: Digest
    md5: str | None
    source_context: str
    session_context: str
    procedure: str
    procedure_task_id: str
    class_id: int
    storage_region: str
    bucket: str
    key: str
    media_url: str
    cover_url: str
    cover_key: str | None
    create_time: str
    expire_time: str
    sub_app_id: int | None
    session_key: str

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the committed bytes."""
        return self.digest.value


@dataclass
class PushRecord:
    """One push attempt (or a push the policy dropped) and how it went."""

    event_id: int
    event_type: str
    attempt: int
    url: str | None
    body: bytes
    outcome: str  # "delivered", "timeout", "error", "dropped", "no-url" or "cancelled"
    copy: int = 1  # which copy, when the policy duplicates the push
    status: int | None = None
    response: bytes | None = None
    error: str | None = None
    started_at: float = 0.0
    elapsed: float = 0.0


class State:
    """The emulator's state, thread-safe; read it from tests through the properties."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "parts").mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._sessions: dict[str, Session] = {}
        self._credentials: dict[str, Credential] = {}
        self._objects: dict[tuple[str, str], CosObject] = {}
        self._uploads: dict[str, MultipartUpload] = {}
        self._media: dict[str, Media] = {}
        self._events: list[dict] = []
        self._pushes: list[PushRecord] = []
        self._requests: Counter = Counter()
        self.changed = threading.Condition(self.lock)

    # Read side: copies, so callers may iterate while requests come in.

    @property
    def media(self) -> dict[str, Media]:
        """{FileId: Media} of every committed upload."""
        with self.lock:
            return dict(self._media)

    @property
    def objects(self) -> dict[tuple[str, str], CosObject]:
        """{(bucket, key): CosObject} of every complete COS object."""
        with self.lock:
            return dict(self._objects)

    @property
    def uploads(self) -> dict[str, MultipartUpload]:
        """{UploadId: MultipartUpload} of the multipart uploads in progress (parts copied too)."""
        with self.lock:
            return {uid: MultipartUpload(u.upload_id, u.bucket, u.key, u.initiated, u.content_type,
                                         dict(u.parts))
                    for uid, u in self._uploads.items()}

    @property
    def sessions(self) -> dict[str, Session]:
        """{VodSessionKey: Session} of every ApplyUpload."""
        with self.lock:
            return dict(self._sessions)

    @property
    def credentials(self) -> dict[str, Credential]:
        """{temporary SecretId: Credential} handed out by ApplyUpload."""
        with self.lock:
            return dict(self._credentials)

    @property
    def events(self) -> list[dict]:
        """Every event VOD produced, in order, as the dict its body is made of."""
        with self.lock:
            return list(self._events)

    @property
    def pushes(self) -> list[PushRecord]:
        """Every push attempt, in the order they finished."""
        with self.lock:
            return list(self._pushes)

    @property
    def requests(self) -> Counter:
        """Requests received per action: API actions by name, COS operations by COS's names."""
        with self.lock:
            return Counter(self._requests)

    def read_object(self, bucket: str, key: str) -> bytes:
        """A small object's bytes (tests); KeyError when there is none."""
        with self.lock:
            path = self._objects[(bucket, key)].path
        return path.read_bytes()

    # Write side, used by the server.

    def count(self, action: str) -> None:
        """Count one received request for `action`."""
        with self.lock:
            self._requests[action] += 1

    def add_session(self, session: Session, credential: Credential) -> None:
        """Keep an ApplyUpload's session and its temporary key."""
        with self.lock:
            self._sessions[session.session_key] = session
            self._credentials[credential.secret_id] = credential

    def session(self, session_key: str) -> Session | None:
        """The session for `session_key`, if ApplyUpload issued it."""
        with self.lock:
            return self._sessions.get(session_key)

    def credential(self, secret_id: str) -> Credential | None:
        """The temporary key with this SecretId, if ApplyUpload issued it."""
        with self.lock:
            return self._credentials.get(secret_id)

    def bucket_known(self, bucket: str, region: str) -> bool:
        """Whether some session uploads to this bucket in this region."""
        with self.lock:
            return any(c.bucket == bucket and c.region == region for c in self._credentials.values())

    def object(self, bucket: str, key: str) -> CosObject | None:
        """The complete object at bucket/key, if any."""
        with self.lock:
            return self._objects.get((bucket, key))

    def write_stream(self, stream, length: int | None, sha256: bool = True) -> StoredFile:
        """Copy a request body to a new file in chunks, hashing (MD5, and SHA-256 unless told not) as it goes."""
        path = self.root / "incoming" / uuid.uuid4().hex
        md5, sha256, size = hashlib.md5(), hashlib.sha256() if sha256 else None, 0
        with open(path, "wb") as out:
            while length is None or size < length:
                chunk = stream.read(BODY_CHUNK if length is None else min(BODY_CHUNK, length - size))
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                if sha256 is not None:
                    sha256.update(chunk)
                size += len(chunk)
        return StoredFile(path, size, md5.hexdigest(), sha256.hexdigest() if sha256 is not None else None)

    def put_object(self, bucket, key, stored: StoredFile, content_type, now, etag=None, parts=None) -> CosObject:
        """Make `stored` the object at bucket/key, replacing (and deleting) any older one."""
        path = self.root / "objects" / uuid.uuid4().hex
        os.replace(stored.path, path)
        obj = CosObject(bucket, key, path, stored.size, stored.md5, Digest(path, stored.sha256),
                        etag or f'"{stored.md5}"', content_type, now, parts)
        with self.lock:
            old = self._objects.get((bucket, key))
            self._objects[(bucket, key)] = obj
            self.changed.notify_all()
        if old is not None:
            old.digest.value  # a media record may share it: hash the old bytes before they go
            old.path.unlink(missing_ok=True)
        return obj

    def start_upload(self, bucket, key, content_type, now) -> MultipartUpload:
        """Initiate a multipart upload."""
        upload = MultipartUpload(uuid.uuid4().hex + uuid.uuid4().hex[:8], bucket, key, now, content_type)
        (self.root / "parts" / upload.upload_id).mkdir()
        with self.lock:
            self._uploads[upload.upload_id] = upload
        return upload

    def upload(self, upload_id: str) -> MultipartUpload | None:
        """The multipart upload in progress with this id (the live record; hold the lock to read parts)."""
        with self.lock:
            return self._uploads.get(upload_id)

    def uploads_for(self, bucket: str, prefix: str) -> list[MultipartUpload]:
        """Uploads in progress in `bucket` whose key starts with `prefix`, oldest first."""
        with self.lock:
            found = [u for u in self._uploads.values() if u.bucket == bucket and u.key.startswith(prefix)]
        return sorted(found, key=lambda u: (u.key, u.initiated))

    def put_part(self, upload_id, number, stored: StoredFile, now) -> Part | None:
        """Keep `stored` as part `number` (a re-sent part replaces the old); None if the upload is gone."""
        path = self.root / "parts" / upload_id / f"{number}-{uuid.uuid4().hex[:8]}"
        with self.lock:
            upload = self._uploads.get(upload_id)
            if upload is None:
                stored.path.unlink(missing_ok=True)
                return None
            os.replace(stored.path, path)
            part = Part(number, path, stored.size, stored.md5, now)
            old = upload.parts.get(number)
            upload.parts[number] = part
        if old is not None:
            old.path.unlink(missing_ok=True)
        return part

    def finish_upload(self, upload_id) -> MultipartUpload | None:
        """Take the upload out of the in-progress list (complete or abort), or None if gone."""
        with self.lock:
            return self._uploads.pop(upload_id, None)

    def drop_upload_files(self, upload: MultipartUpload) -> None:
        """Delete an ended upload's part files."""
        shutil.rmtree(self.root / "parts" / upload.upload_id, ignore_errors=True)

    def assemble(self, parts: list[Part]) -> StoredFile:
        """Concatenate parts into a new file, copied by the kernel; its digests are left for later."""
        path = self.root / "incoming" / uuid.uuid4().hex
        size = 0
        with open(path, "wb") as out:
            for part in parts:
                with open(part.path, "rb") as source:
                    size += _copy(source, out, part.size)
        return StoredFile(path, size, None, None)

    def commit(self, session: Session, media: Media) -> bool:
        """Record the media CommitUpload created; False if the session was committed meanwhile."""
        with self.lock:
            if session.file_id is not None:
                return False
            session.file_id = media.file_id
            self._media[media.file_id] = media
            self.changed.notify_all()
            return True

    def add_event(self, event: dict) -> int:
        """Keep an event VOD produced; its index is the event's id."""
        with self.lock:
            self._events.append(event)
            return len(self._events) - 1

    def add_push(self, record: PushRecord) -> None:
        """Record one push attempt and wake whoever waits for pushes."""
        with self.lock:
            self._pushes.append(record)
            self.changed.notify_all()


def _copy(source, out, size: int) -> int:
    """Append `size` bytes of `source` to `out`: copy_file_range where the OS has it, else read/write."""
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < size:
                n = os.copy_file_range(source.fileno(), out.fileno(), size - copied)
                if n == 0:
                    break
                copied += n
            return copied
        except OSError:  # a file system without it (EXDEV, ENOSYS…): fall back where we stopped
            source.seek(copied)
            out.seek(0, os.SEEK_END)
    while chunk := source.read(CHUNK):
        out.write(chunk)
        copied += len(chunk)
    return copied
