"""Stored callbacks as fixture files: each body byte for byte in a file of its own, and a
manifest.json saying what each file is. The pytest plugin (testing.py) replays such a folder."""
import hashlib
import json
import re
from pathlib import Path

from . import db
from .handlers import replay
from .models import Event, utcnow

MANIFEST = "manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ExportError(Exception):
    """An export that cannot be written where asked; the message says why."""


def export(app, selection, folder) -> list[dict]:
    """Write the selected events' bodies into `folder` with a manifest; returns its entries."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        # Files of an earlier export would otherwise sit beside this one, unlisted.
        raise ExportError(f"{folder} exists and is not an empty folder")
    with db.session_factory(app)() as session:
        row_ids = selection.row_ids(session)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for rows in replay.chunks(app, Event, row_ids):
        for row in rows:
            name = file_name(row)
            (folder / name).write_bytes(row.body)
            entries.append({"file": name, "id": row.id, "event_type": row.event_type,
                            "format": row.format, "file_id": row.file_id,
                            "sha256": hashlib.sha256(row.body).hexdigest(),
                            "received_at": row.received_at.isoformat(),
                            "content_type": row.content_type})
    manifest = {"exported_at": utcnow().isoformat(), "selection": selection.describe(),
                "files": entries}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    return entries


def file_name(row) -> str:
    """<id>-<EventType>[-<FileId>].json, keeping only characters safe in any file system."""
    # Event types and FileIds come from the bodies: nothing in them may reach the path as is.
    parts = [str(row.id), row.event_type] + ([row.file_id] if row.file_id else [])
    return "-".join(_UNSAFE.sub("_", part)[:80] for part in parts) + ".json"


def read_manifest(folder) -> list[dict] | None:
    """The entries of `folder`'s manifest.json, or None if it has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["files"]
