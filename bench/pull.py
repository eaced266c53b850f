"""Pull benchmark: the reliable-callback consumer against the emulator, on SQLite and PostgreSQL.

    python -m bench.pull [--events 5000] [--databases sqlite,postgresql]

The emulator runs in a child process with `--events` distinct events of every sample type
queued (Mode PULL); the consumer (receiver.vod.pull.Consumer, as `vod-receiver pull` runs it)
runs in this process until every event is confirmed. Prints events/s stored and confirmed, the
consumer's CPU per event (this process only: the emulator's CPU is not counted), batches, and a
check that the database holds each event exactly once. PostgreSQL is measured too when
RECEIVER_BENCH_POSTGRES_URL names a server; the benchmark creates and drops its own database.
"""
import argparse
import logging
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from receiver import create_app, db
from receiver.models import Event
from receiver.vod.client import Client
from receiver.vod.pull import Consumer

from .ingest import database

BENCH_DATABASE = "vodr_bench_pull"
GOAL = 1000  # events/s


def main(argv=None):
    """Run the benchmark and print its figures."""
    options = _parser().parse_args(argv)
    databases = [kind for kind in options.databases.split(",")
                 if kind != "postgresql" or os.environ.get("RECEIVER_BENCH_POSTGRES_URL")]
    print(f"vod-receiver pull benchmark: {os.cpu_count()} CPUs, {options.events} events "
          f"(every sample type), batches of at most 16, emulator in its own process")
    if "postgresql" not in databases:
        print("PostgreSQL: skipped (set RECEIVER_BENCH_POSTGRES_URL to a server URL to include it)")
    logging.getLogger("receiver").setLevel(logging.WARNING)  # no line per batch on the terminal
    for kind in databases:
        with tempfile.TemporaryDirectory(prefix="vodr-bench-pull-") as scratch, \
                database(kind, Path(scratch), BENCH_DATABASE) as url:
            _run(kind, url, Path(scratch), options.events, options.workers)


def _parser():
    parser = argparse.ArgumentParser(prog="python -m bench.pull", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events to queue and consume")
    parser.add_argument("--workers", type=int, default=4, help="consumer loops at once (vod-receiver "
                        "pull --workers)")
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql")
    return parser


def _run(kind, url, scratch, count, workers):
    db.upgrade(url)
    app = create_app({"RECEIVER_DATABASE_URL": url, "RECEIVER_SPOOL_DIR": str(scratch / "spool"),
                      "RECEIVER_SPOOL_DRAIN_INTERVAL": 0, "RECEIVER_LOG_FORMAT": "json"})
    context = multiprocessing.get_context("spawn")
    ready, done = context.Queue(), context.Event()
    emulator = context.Process(target=_emulator, args=(count, ready, done), daemon=True)
    emulator.start()
    try:
        endpoint, secret_id, secret_key = ready.get(timeout=120)
        consumer = Consumer(app, Client(secret_id, secret_key, api_endpoint=endpoint))
        consumer.check()
        started, cpu, emulator_cpu = time.perf_counter(), time.process_time(), _cpu(emulator.pid)
        totals = consumer.run(workers=workers, until_empty=True)
        # Up to the last batch: the empty long poll that ends the run is not the consumer's work.
        wall, cpu = totals.last_batch_at - started, time.process_time() - cpu
        emulator_cpu = _cpu(emulator.pid) - emulator_cpu
        batches = totals.batches
        if totals.confirmed != count:
            print(f"{kind}: only {totals.confirmed} of {count} events confirmed")
        with db.session_factory(app)() as session:
            stored = session.scalar(select(func.count()).select_from(Event))
            deliveries = session.scalar(select(func.sum(Event.delivery_count)))
    finally:
        done.set()
        emulator.join(10)
        db.dispose(app)
    rate = count / wall
    print(f"{kind:10s} {workers} workers {rate:6.0f} events/s stored and confirmed  ({count} in {wall:.2f} s, "
          f"{batches} batches, {count / batches:.1f} per batch)  consumer CPU "
          f"{cpu / count * 1e6:.0f} µs/event ({cpu / wall * 100:.0f}% of one core), emulator "
          f"{emulator_cpu / count * 1e6:.0f} µs/event  "
          f"database: {stored} events, {deliveries} deliveries "
          f"({'exactly once' if stored == deliveries == count else 'NOT exactly once'})  "
          f"goal {GOAL}/s: {'met' if rate >= GOAL else 'missed'}")


def _cpu(pid):
    # utime + stime of another process, in seconds (Linux /proc; fields 14 and 15).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _emulator(count, ready, done):
    # In its own process, so its CPU (TC3 checks, JSON) is not the consumer's.
    from receiver.emulator import Emulator
    from receiver.emulator.events import mixed_events

    # A short long poll: the run ends with one empty PullEvents per worker.
    with Emulator(mode="PULL", long_poll_seconds=0.5) as emu:
        for event in mixed_events(count):
            emu.enqueue(event)
        ready.put((emu.api_endpoint, emu.secret_id, emu.secret_key))
        done.wait()




if __name__ == "__main__":
    main()
