"""Ingest benchmark: the receiver against the floor of its stack, on SQLite and PostgreSQL.

    python -m bench.ingest [--pairs 4] [--seconds 10] [--connections 16] [--workers 2]

Starts, on loopback, gunicorn serving the receiver and gunicorn serving bench/floor.py (a Flask
app that only parses the JSON body) with the same settings and worker count, then drives both
with the same load generator in interleaved runs A B A B, so drift of a shared machine falls on
both alike. Prints requests/s, the receiver/floor ratio (median of the pairs), p50/p99 latency,
a check that every acknowledged callback is in the database, and worker memory (RSS) as the
callback count grows. PostgreSQL is measured too when RECEIVER_BENCH_POSTGRES_URL names a
server (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres); the benchmark creates and
drops its own database there.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from receiver import db, samples, spool

from . import load

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("RECEIVER_SAMPLES_DIR") or samples.FOLDER)
BENCH_DATABASE = "vodr_bench_ingest"
GOALS = {"sqlite": 0.5, "postgresql": 0.35}
P99_GOAL_MS = 50
MEMORY_CHECKPOINTS = (10_000, 50_000, 100_000)
# A run whose connections all went to one worker is repeated at most this often (_Runs.drive):
# it happens in about a third of runs here, and a pair holding one skews the ratio to 0.16 or 0.85.
REPEATS = 4


def main(argv=None):
    """Run the benchmark and print its figures."""
    options = _parser().parse_args(argv)
    sample = _sample_path(options.sample)
    databases = [kind for kind in options.databases.split(",")
                 if kind != "postgresql" or os.environ.get("RECEIVER_BENCH_POSTGRES_URL")]
    print(f"vod-receiver ingest benchmark: {os.cpu_count()} CPUs, {options.workers} workers each "
          f"({_worker_settings()}), {options.connections} connections, load generator {load.name()}, "
          f"{options.pairs} pairs x {options.seconds} s, body {sample.name} (unique FileId)")
    if load.name() != "wrk":
        print("wrk: not installed (apt-get install wrk); the Python load generator takes CPU from the "
              "servers, the floor most, so its ratios read higher than wrk's and than the goals assume")
    if "postgresql" not in databases:
        print("PostgreSQL: skipped (set RECEIVER_BENCH_POSTGRES_URL to a server URL to include it)")
    summaries = []
    scratch = Path(tempfile.mkdtemp(prefix="vodr-bench-"))
    template = scratch / "body.json"
    template.write_bytes(_template(sample))
    try:
        for kind in databases:
            with database(kind, scratch) as url:
                summaries.append(_bench_database(kind, url, template, scratch / kind, options))
    except BaseException:
        print(f"benchmark failed; the servers' logs are kept in {scratch}", file=sys.stderr)
        raise
    shutil.rmtree(scratch)
    print("\nSummary")
    for line in summaries:
        print(line)


def _worker_settings():
    # Both servers run with the receiver's shipped gunicorn settings; say which they are.
    from receiver import gunicorn_conf

    extra = f", GUNICORN_CMD_ARGS={os.environ['GUNICORN_CMD_ARGS']!r}" if os.environ.get("GUNICORN_CMD_ARGS") else ""
    worker_class = getattr(gunicorn_conf, "worker_class", "sync")  # gunicorn's defaults
    if worker_class == "gthread":
        return f"gthread, {getattr(gunicorn_conf, 'threads', 1)} threads{extra}"
    return f"{worker_class}, {getattr(gunicorn_conf, 'worker_connections', 1000)} connections each{extra}"


def _parser():
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4, help="A/B pairs of runs (default 4)")
    parser.add_argument("--seconds", type=int, default=10, help="length of each run (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (16)")
    parser.add_argument("--threads", type=int, default=1,
                        help="load generator threads (default 1: leaves the CPUs to the servers)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server (2)")
    parser.add_argument("--port", type=int, default=18500, help="receiver port; floor = port+1")
    parser.add_argument("--memory-callbacks", type=int, default=MEMORY_CHECKPOINTS[-1],
                        help="drive the receiver to this many callbacks, sampling worker RSS "
                             "(default 100000; 0 skips)")
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="which of sqlite,postgresql to measure (default both; PostgreSQL "
                             "only when RECEIVER_BENCH_POSTGRES_URL is set)")
    parser.add_argument("--sample", help="NewFileUpload body (default: the v3 sample)")
    parser.add_argument("--ready-path", default="/readyz",
                        help="receiver URL polled until 200 before the runs (default /readyz)")
    return parser


def _bench_database(kind, url, template, folder, options):
    folder.mkdir(parents=True)
    print(f"\n== {kind} ({make_url(url).render_as_string(hide_password=True)})")
    db.upgrade(url)
    receiver_url = f"http://127.0.0.1:{options.port}/callbacks/vod"
    floor_url = f"http://127.0.0.1:{options.port + 1}/callbacks/vod"
    env = {"RECEIVER_DATABASE_URL": url, "RECEIVER_SPOOL_DIR": str(folder / "spool"),
           "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"), "RECEIVER_LOG_FORMAT": "json"}
    engine = create_engine(url)
    try:
        with _gunicorn("receiver:create_app()", options.port, options.workers, env, folder / "receiver") as receiver, \
                _gunicorn("bench.floor:app", options.port + 1, options.workers,
                          {"PROMETHEUS_MULTIPROC_DIR": str(folder / "floor-metrics")}, folder / "floor") as floor:
            _wait_until_up(f"http://127.0.0.1:{options.port}{options.ready_path}")
            _wait_until_up(f"http://127.0.0.1:{options.port + 1}/livez")
            runs = _Runs(template, options)
            runs.drive(receiver_url, receiver.pid, 2)  # warm up: imports, pools, page cache
            runs.drive(floor_url, floor.pid, 2)
            pairs, lost = [], 0
            memory = _Memory(receiver.pid, options.memory_callbacks)
            print(f"{'pair':>4}  {'receiver rps':>12} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms':>6}  "
                  f"{'floor rps':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu ms':>6}  {'ratio':>5}  "
                  f"acknowledged/stored")
            for pair in range(1, options.pairs + 1):
                before = _stored(engine, env)
                a = runs.drive(receiver_url, receiver.pid, options.seconds)
                stored = _stored(engine, env) - before
                memory.sample(before + stored)
                b = runs.drive(floor_url, floor.pid, options.seconds)
                acknowledged = a.acknowledged + sum(d.acknowledged for d in a.discarded)
                lost += max(0, acknowledged - stored)
                pairs.append((a, b))
                # wrk drops the answers still in flight when a run ends: stored may exceed
                # acknowledged by those; the reverse would be a lost callback.
                check = "ok" if stored >= acknowledged else "LOST"
                errors = f", {a.errors} errors" if a.errors else ""
                print(f"{pair:>4}  {a.rps:>12.0f} {a.p50_ms:>7.1f} {a.p99_ms:>7.1f} {a.cpu_ms:>6.2f}  "
                      f"{b.rps:>9.0f} {b.p50_ms:>7.1f} {b.p99_ms:>7.1f} {b.cpu_ms:>6.2f}  "
                      f"{a.rps / b.rps:>5.2f}  "
                      f"{acknowledged}/{stored} {check}{errors}")
            summary = _summary(kind, pairs, lost)
            print(summary)
            if runs.unbalanced:
                print(f"({runs.unbalanced} runs repeated: every connection had gone to one worker)")
            if options.memory_callbacks:
                _drive_to(memory, runs, receiver_url, engine, env)
    finally:
        engine.dispose()
    return summary


class _Runs:
    """Load generator runs, each with a run id of its own so FileIds never repeat."""

    def __init__(self, template, options):
        self.template, self.options, self.count, self.unbalanced = template, options, 0, 0
        self.prefix = int(time.time()) % 100_000

    def drive(self, url, server_pid, seconds):
        """One run against `url`; its Result also says the server's CPU time per request.

        The load generator opens its connections at once and keeps them, and now and then the
        kernel hands every one to the same worker: that run measures one worker, not all, and
        is run again (up to REPEATS times). Its acknowledged callbacks are kept in `discarded`.
        """
        discarded = []
        while True:
            self.count += 1
            before = _cpu_seconds(server_pid)
            result = load.run(url, self.template, f"{self.prefix:05d}{self.count:03d}", seconds,
                              self.options.connections, self.options.threads)
            used = {pid: cpu - before.get(pid, 0.0) for pid, cpu in _cpu_seconds(server_pid).items()}
            result.cpu_ms = sum(used.values()) * 1000 / max(result.acknowledged, 1)
            workers = [cpu for pid, cpu in used.items() if pid != server_pid]
            if len(discarded) == REPEATS or len(workers) < 2 or min(workers) >= 0.2 * max(workers):
                result.discarded = discarded
                return result
            discarded.append(result)
            self.unbalanced += 1


def _summary(kind, pairs, lost):
    ratio = statistics.median(a.rps / b.rps for a, b in pairs)
    p99 = statistics.median(a.p99_ms for a, _b in pairs)
    goal = GOALS[kind]
    missed = [name for name, met in (("ratio", ratio >= goal), ("p99", p99 < P99_GOAL_MS)) if not met]
    verdict = f"misses the {' and the '.join(missed)}" if missed else "meets both"
    return (f"{kind:<10}  receiver {statistics.median(a.rps for a, _ in pairs):6.0f} rps "
            f"(p50 {statistics.median(a.p50_ms for a, _ in pairs):.1f} ms, p99 {p99:.1f} ms)  "
            f"floor {statistics.median(b.rps for _, b in pairs):6.0f} rps  "
            f"ratio {ratio:.3f} (goal >= {goal}, p99 < {P99_GOAL_MS} ms: {verdict})  "
            f"server CPU per request {statistics.median(a.cpu_ms for a, _ in pairs):.2f} ms vs "
            f"{statistics.median(b.cpu_ms for _, b in pairs):.2f} ms  "
            f"acknowledged but not stored: {lost}")


class _Memory:
    """Worker RSS sampled as the receiver's callback count passes each checkpoint."""

    def __init__(self, master_pid, target):
        self.master_pid, self.samples = master_pid, []
        self.checkpoints = [c for c in MEMORY_CHECKPOINTS if c < target] + [target] if target else []

    def sample(self, total):
        """Record each worker's RSS if `total` callbacks passed the next checkpoint."""
        if not self.checkpoints or total < self.checkpoints[0]:
            return
        while self.checkpoints and total >= self.checkpoints[0]:
            self.checkpoints.pop(0)
        self.samples.append((total, _worker_memory(self.master_pid)))

    def report(self):
        """Print the samples and whether a worker's peak RSS still grows after warming up."""
        print("memory: worker RSS / peak RSS (VmRSS / VmHWM, MiB)")
        for total, workers in self.samples:
            print(f"  {total:>8} callbacks: " + "  ".join(
                f"pid {pid} {rss:.1f} / {hwm:.1f}" for pid, (rss, hwm) in sorted(workers.items())))
        if len(self.samples) < 2:
            return
        # Caches and pools fill during the first callbacks; a leak keeps growing afterwards.
        (start, before), (end, after) = self.samples[-2], self.samples[-1]
        if set(before) != set(after):
            print("  workers were replaced during the run: RSS not comparable")
            return
        # A worker can step up once more after warming up, e.g. when one more pooled SQLite
        # connection (2 MiB page cache each) is opened; a leak lifts the highest worker too.
        growth = ", ".join(f"pid {pid} {after[pid][1] - before[pid][1]:+.1f}" for pid in sorted(before))
        ceiling = max(hwm for _rss, hwm in after.values()) - max(hwm for _rss, hwm in before.values())
        print(f"  peak RSS growth from {start} to {end} callbacks: {growth} MiB; highest worker "
              f"{ceiling:+.1f} MiB ({'flat' if ceiling < 1 else 'GROWS'})")


def _drive_to(memory, runs, url, engine, env):
    """Drive the receiver until every memory checkpoint has been sampled."""
    while memory.checkpoints:
        runs.drive(url, memory.master_pid, 5)
        memory.sample(_stored(engine, env))
    memory.report()


def _cpu_seconds(master_pid):
    """CPU time (user + system) used so far by gunicorn's master and each live worker, by pid.

    Steadier than requests/s on a shared machine: other jobs slow a server down, but they
    change much less how much CPU it spends on each request.
    """
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    used = {}
    for pid in [master_pid, *map(int, children)]:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime+stime
    return used


def _worker_memory(master_pid):
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    memory = {}
    for pid in map(int, children):
        status = dict(line.split(":", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        memory[pid] = tuple(int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
    return memory


def _stored(engine, env):
    # Acknowledged callbacks are in the events table, or in the spool if the database failed.
    with engine.connect() as conn:
        rows = conn.scalar(text("SELECT count(*) FROM events"))
    return rows + spool.depth(env["RECEIVER_SPOOL_DIR"])


@contextmanager
def _gunicorn(app, port, workers, env, log_prefix):
    command = [sys.executable, "-m", "gunicorn", "--config", "python:receiver.gunicorn_conf",
               "--bind", f"127.0.0.1:{port}", "--workers", str(workers), app]
    with open(f"{log_prefix}.out.log", "wb") as out, open(f"{log_prefix}.err.log", "wb") as err:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                   stderr=err)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{url} answered {exc.code}: {exc.read()[:300]!r}") from None
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not come up within {timeout} s; see the logs") from None
            time.sleep(0.1)


@contextmanager
def database(kind, scratch, name=BENCH_DATABASE):
    """A benchmark database: a SQLite file in `scratch`, or `name` made afresh on the PostgreSQL
    server of RECEIVER_BENCH_POSTGRES_URL and dropped afterwards; yields its URL."""
    if kind == "sqlite":
        yield f"sqlite:///{scratch / 'bench.db'}"
        return
    server = make_url(os.environ["RECEIVER_BENCH_POSTGRES_URL"])
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _sample_path(given):
    path = Path(given) if given else SAMPLE / "v3-push-newfileupload.json"
    if not path.is_file():
        raise SystemExit(f"sample body not found: {path} (set RECEIVER_SAMPLES_DIR or --sample)")
    return path


def _template(sample):
    document = json.loads(sample.read_bytes())
    document["FileUploadEvent"]["FileId"] = "__FILE_ID__"
    return json.dumps(document).encode()


if __name__ == "__main__":
    main()
