"""`make bench` works as a new user would run it: both servers up, figures printed, nothing lost."""
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import SAMPLES

ROOT = Path(__file__).resolve().parents[1]


def test_ingest_benchmark_prints_its_figures_and_loses_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--pairs", "1", "--seconds", "1",
         "--memory-callbacks", "0", "--databases", "sqlite", "--port", "18650",
         "--sample", str(SAMPLES / "v3-push-newfileupload.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=180)

    assert done.returncode == 0, done.stderr[-2000:]
    summary = done.stdout.split("Summary", 1)[1]
    assert re.search(r"sqlite\s+receiver\s+\d+ rps .* ratio \d+\.\d{3} .* server CPU per request "
                     r"\d+\.\d\d ms vs \d+\.\d\d ms\s+acknowledged but not stored: 0", summary), done.stdout
    assert " ok" in done.stdout and "LOST" not in done.stdout


def test_in_process_benchmark_prints_cpu_per_callback():
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--callbacks", "40", "--warm-up", "8",
         "--sample", str(SAMPLES / "v3-push-newfileupload.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    assert re.fullmatch(r"receiver: 40 callbacks, CPU per callback \d+ µs user \+ \d+ µs system\n",
                        done.stdout), done.stdout


WEB_PAGES = ["overview /admin/", "events, unfiltered", "events ?event_type=", "events ?source_context=",
             "events ?since=1h", "events, 21st page (cursor)", "event page", "rejections, unfiltered",
             "rejections ?reason=", "rejection page", "uploads ?status=waiting", "uploads ?status=failed",
             "upload page", "handlers ?state=failed", "handlers ?state=dead",
             "replay confirmation (capped)", "replays"]


def test_web_benchmark_signs_in_and_prints_every_page_with_its_figures():
    # SQLite only: a PostgreSQL server named for the real benchmark is left alone here.
    env = {name: value for name, value in os.environ.items() if name != "RECEIVER_BENCH_POSTGRES_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.web", "--events", "3000", "--samples", "3", "--warm-up", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"sqlite: \d+ CPUs, 3,000 events, [\d,]+ duplicates, 30 rejections; first "
                     r"overview.summary .*: [\d,]+ ms\n", done.stdout), done.stdout
    table = done.stdout.split("goal p95 < 100 ms\n", 1)[1]
    for page in WEB_PAGES:
        assert re.search(rf"^{re.escape(page)}\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d\s+(met|MISSED)$",
                         table, re.MULTILINE), (page, done.stdout)
