"""The uploader's memory does not grow with the file: it never reads a file whole."""
import socket
import subprocess
import sys
import tracemalloc

from receiver import db
from receiver.vod.client import Client
from receiver.vod.upload import Uploader
from vod_upload_fixtures import FAST_RETRY, SECRET_ID, SECRET_KEY, wait_until, write_file


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak(uploader, path):
    tracemalloc.start()
    try:
        uploader.upload(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_from_8_to_64_mb(tmp_path):
    # The emulator in a process of its own: tracemalloc counts every thread of this one, and
    # the emulator's buffers are not the uploader's. SQLite only: the database is not the point.
    url = f"sqlite:///{tmp_path / 'm.db'}"
    db.upgrade(url)
    port = _free_port()
    emulator = subprocess.Popen([sys.executable, "-m", "receiver.cli", "emulator", "--port",
                                 str(port), "--storage-dir", str(tmp_path / "vod")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(listening, 30, "the emulator")
        client = Client(SECRET_ID, SECRET_KEY, api_endpoint=f"127.0.0.1:{port}",
                        cos_endpoint=f"http://127.0.0.1:{port}", part_size_mb=1, threads=2,
                        retry=FAST_RETRY)
        uploader = Uploader.from_url(client, url)
        peaks = {}
        for mb in (8, 64):
            path = tmp_path / f"{mb}.mp4"
            write_file(path, mb * 1024 * 1024, seed=bytes([mb]))
            peaks[mb] = _peak(uploader, path)
            path.unlink()
    finally:
        emulator.terminate()
        emulator.wait(10)
    # Two 1 MB parts in flight and a 1 MiB hashing chunk, whatever the size (measured: ~2 MiB).
    assert peaks[64] < 6 * 1024 * 1024, peaks
    assert abs(peaks[64] - peaks[8]) < 2 * 1024 * 1024, peaks
