"""Upload throughput and memory: vod-receiver's upload helper against Tencent's vod-python-sdk.

    python -m bench.upload [--sizes 8,1024] [--rounds 2] [--peer-python .venv-peer/bin/python]

Both upload the same files to the local VOD emulator (run in this process), each in a child
process of its own, in interleaved pairs (the order alternating), so the machine's changing
speed falls on both alike. Tencent's `VodUploadClient` has no endpoint settings: its module
globals are redirected at the emulator as vod-spec §8.1 describes, and it runs with its own
defaults (1 MB parts, 5 threads), as a user would get it; the helper runs with its defaults too.
Printed per file size: MB/s of each (medians), the ratio helper/peer, and each child's peak RSS.
Goals (issue 13): ratio >= 1.0, the helper's peak RSS under 150 MB for the 1 GB file.

`make bench-upload` makes the peer's virtualenv (.venv-peer: vod-python-sdk pulls in the full
tencentcloud-sdk-python, which is why the project itself does not use it).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from receiver import db
from receiver.emulator import Emulator

SECRET_ID, SECRET_KEY = "AKIDbenchupload", "bench-upload-secret"

# Each child prints one JSON line: {"seconds": …, "file_id": …}; its peak RSS comes from wait4.
HELPER = """
import json, sys, time
from receiver.vod.client import Client
from receiver.vod.upload import Uploader
api, cos, database, path = sys.argv[1:5]
client = Client.from_env(secret_id=%(id)r, secret_key=%(key)r, api_endpoint=api, cos_endpoint=cos)
uploader = Uploader.from_url(client, database)
started = time.perf_counter()
result = uploader.upload(path, source_context="bench")
print(json.dumps({"seconds": time.perf_counter() - started, "file_id": result.file_id}))
""" % {"id": SECRET_ID, "key": SECRET_KEY}

PEER = """
import json, sys, time
from qcloud_cos import CosConfig
from qcloud_vod import vod_upload_client
from qcloud_vod.model import VodUploadRequest
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.vod.v20180717 import vod_client
api, cos_host, cos_port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

class _VodClientModule:  # vod-spec 8.1: the module global the upload client builds VodClient from
    @staticmethod
    def VodClient(cred, region):
        return vod_client.VodClient(cred, region, ClientProfile(
            httpProfile=HttpProfile(protocol="http", endpoint=api)))

def _cos_config(**kwargs):
    return CosConfig(Scheme="http", IP=cos_host, Port=cos_port, **kwargs)

vod_upload_client.vod_client = _VodClientModule
vod_upload_client.CosConfig = _cos_config
client = vod_upload_client.VodUploadClient(%(id)r, %(key)r)
request = VodUploadRequest()
request.MediaFilePath = path
request.SourceContext = "bench"
started = time.perf_counter()
response = client.upload("ap-guangzhou", request)
print(json.dumps({"seconds": time.perf_counter() - started, "file_id": response.FileId}))
""" % {"id": SECRET_ID, "key": SECRET_KEY}


def main(argv=None):
    """Run the interleaved pairs and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,1024", help="file sizes in MB, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved pairs per size")
    parser.add_argument("--peer-python", default=".venv-peer/bin/python",
                        help="a Python with vod-python-sdk installed")
    args = parser.parse_args(argv)
    if not Path(args.peer_python).exists():
        raise SystemExit(f"no peer Python at {args.peer_python}: make bench-upload creates it "
                         "(python3 -m venv .venv-peer && .venv-peer/bin/pip install vod-python-sdk)")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="vodr-bench-upload-") as tmp:
        tmp = Path(tmp)
        print(f"{'file':>8}  {'who':<7} {'MB/s (median)':>14} {'runs':<24} {'peak RSS MiB':>12}")
        summary = []
        for size in sizes:
            path = tmp / f"bench-{size}mb.mp4"
            _make_file(path, size)
            runs = {"helper": [], "peer": []}
            for round_ in range(args.rounds):
                order = ("helper", "peer") if round_ % 2 == 0 else ("peer", "helper")
                for who in order:
                    runs[who].append(_run(who, path, tmp, args.peer_python))
            rates = {who: [size / r["seconds"] for r in rs] for who, rs in runs.items()}
            rss = {who: max(r["rss_mib"] for r in rs) for who, rs in runs.items()}
            for who in ("helper", "peer"):
                figures = ", ".join(f"{rate:.1f}" for rate in rates[who])
                print(f"{size:>6}MB  {who:<7} {statistics.median(rates[who]):>14.1f} "
                      f"{figures:<24} {rss[who]:>12.1f}")
            ratio = statistics.median(rates["helper"]) / statistics.median(rates["peer"])
            summary.append((size, ratio, rss["helper"]))
            path.unlink()
        print()
        for size, ratio, rss in summary:
            verdicts = [f"throughput ratio helper/peer {ratio:.2f} "
                        f"({'meets' if ratio >= 1.0 else 'misses'} >= 1.0)"]
            if size >= 1024:
                verdicts.append(f"helper peak RSS {rss:.0f} MiB "
                                f"({'meets' if rss < 150 else 'misses'} < 150 MiB)")
            print(f"{size} MB: " + "; ".join(verdicts))


def _make_file(path, size_mb):
    # Incompressible bytes, written a block at a time (the file may be larger than memory).
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        for i in range(size_mb):
            f.write(block[i % 251:] + block[:i % 251])


def _run(who, path, tmp, peer_python):
    # A fresh emulator per upload: its storage is deleted when it stops, and no state carries over.
    with Emulator(secret_id=SECRET_ID, secret_key=SECRET_KEY, storage_dir=None) as emu:
        if who == "helper":
            database = f"sqlite:///{tmp / 'bench-uploads.db'}"
            if not (tmp / "bench-uploads.db").exists():
                db.upgrade(database)
            command = [sys.executable, "-c", HELPER, emu.api_endpoint, emu.cos_endpoint, database,
                       str(path)]
        else:
            command = [peer_python, "-c", PEER, emu.api_endpoint, emu.cos_ip, str(emu.cos_port),
                       str(path)]
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _pid, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        out, err = child.stdout.read(), child.stderr.read()
        child.stdout.close()
        child.stderr.close()
        if status != 0:
            raise SystemExit(f"{who} upload failed:\n{err.decode(errors='replace')[-2000:]}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        if not emu.state.media.get(result["file_id"]):
            raise SystemExit(f"{who}: the emulator has no media {result['file_id']}")
        result.update(wall=wall, rss_mib=usage.ru_maxrss / 1024)
        return result


if __name__ == "__main__":
    main()
