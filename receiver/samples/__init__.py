"""VOD's documented callback bodies and API examples, shipped as package data (SOURCES.md says
where each comes from). Used by the README's quick start, the tests, the emulator and the
pytest plugin."""
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def path(name):
    """The path of one sample file, e.g. path("v3-push-newfileupload.json")."""
    return FOLDER / name


def read(name):
    """The exact bytes of one sample file."""
    return path(name).read_bytes()


def callback_paths():
    """The sample files that are callback bodies as VOD pushes them (v3 push and legacy v2)."""
    return sorted(p for p in FOLDER.glob("*.json") if p.name.startswith(("v3-push-", "v2-")))
