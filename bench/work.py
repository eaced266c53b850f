"""Handler worker benchmark: events/s one worker settles with a no-op handler, and the time from
an event's commit to its handler starting.

    python -m bench.work [--events 20000] [--wakeups 300] [--gap-ms 20]

On a temporary SQLite file, and on PostgreSQL when RECEIVER_BENCH_POSTGRES_URL names a server
(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres): the benchmark creates its own
database there, vodr_bench_work, and drops it afterwards.

Throughput: --events NewFileUpload events are stored first, then one worker (this process)
runs them all, through the same claim, thread-per-attempt and batched recording as
`vod-receiver work`. Wake-up: a worker waits in a process of its own (LISTEN/NOTIFY on
PostgreSQL; polling every RECEIVER_HANDLER_POLL_INTERVAL on SQLite) while this process commits
one event every --gap-ms through the receiver's group writer, as callbacks are; each handler
start is timed against its event's commit. Also printed: what running a handler in a thread
with a timeout costs over calling it.
"""
import argparse
import multiprocessing
import os
import resource
import tempfile
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from receiver import create_app, db, store
from receiver.handlers import Registry
from receiver.handlers.registry import Handler
from receiver.handlers.worker import Runner, Worker, run_handler
from receiver.store import Delivery

BENCH_DATABASE = "vodr_bench_work"
GOAL_RATE = 1000  # events/s, PostgreSQL
GOAL_P99_MS = 100
BODY = (b'{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"%d","MediaBasicInfo":'
        b'{"Name":"clip.mp4","Type":"mp4","MediaUrl":"https://1256768367.vod2.myqcloud.com/a/%d/f0.mp4",'
        b'"StorageRegion":"ap-guangzhou","SourceInfo":{"SourceType":"Upload","SourceContext":'
        b'"order-%d"}},"ProcedureTaskId":""}}')


def main(argv=None):
    """Run the benchmark on SQLite (and PostgreSQL if configured) and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.work", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events run for throughput (20000)")
    parser.add_argument("--wakeups", type=int, default=300, help="events timed for wake-up (300)")
    parser.add_argument("--gap-ms", type=float, default=20, help="between those events (20)")
    options = parser.parse_args(argv)
    fresh, kept = _thread_cost()
    print(f"running a no-op handler in a thread, over calling it: {kept:.1f} µs with the worker's "
          f"kept thread, {fresh:.1f} µs with a new thread per attempt")
    with tempfile.TemporaryDirectory(prefix="vodr-bench-work-") as folder:
        _bench("SQLite", f"sqlite:///{folder}/bench.db", folder, options)
    server = os.environ.get("RECEIVER_BENCH_POSTGRES_URL")
    if not server:
        print("PostgreSQL: skipped (set RECEIVER_BENCH_POSTGRES_URL)")
        return
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    try:
        url = make_url(server).set(database=BENCH_DATABASE).render_as_string(hide_password=False)
        with tempfile.TemporaryDirectory(prefix="vodr-bench-work-") as folder:
            _bench("PostgreSQL", url, folder, options)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)'))
        admin.dispose()


def _bench(kind, url, folder, options):
    db.upgrade(url)
    config = {"RECEIVER_DATABASE_URL": url, "RECEIVER_SPOOL_DIR": f"{folder}/spool",
              "RECEIVER_SPOOL_DRAIN_INTERVAL": 0, "RECEIVER_LOG_FORMAT": "json",
              "RECEIVER_HANDLER_POLL_INTERVAL": 0.05}
    app = create_app(config)
    _store(app, range(options.events))
    registry = Registry()
    registry.add("NewFileUpload", lambda event: None, name="bench:noop")
    worker = Worker(app, registry)
    backend = _backend_pid(worker) if kind == "PostgreSQL" else None
    cpu, server_cpu = _cpu(), _process_cpu(backend)
    started = time.perf_counter()
    worker.run(once=True, listen=False)
    seconds = time.perf_counter() - started
    done = max(worker.counts["succeeded"], 1)
    cpu = (_cpu() - cpu) / done * 1e6
    server = "" if backend is None else \
        f", its PostgreSQL backend {(_process_cpu(backend) - server_cpu) / done * 1e6:.0f} µs"
    rate = worker.counts["succeeded"] / seconds
    goal = f" (goal ≥ {GOAL_RATE:,}: {'met' if rate >= GOAL_RATE else 'NOT met'})" \
        if kind == "PostgreSQL" else ""
    print(f"{kind}: {worker.counts['succeeded']:,} events in {seconds:.2f} s = {rate:,.0f} events/s "
          f"with one worker{goal}; CPU per event: the worker {cpu:.0f} µs{server}")
    latencies = _wakeups(app, config, options)
    how = "LISTEN/NOTIFY" if kind == "PostgreSQL" else "polling every 50 ms"
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    goal = f" (goal p99 < {GOAL_P99_MS} ms: {'met' if p99 < GOAL_P99_MS else 'NOT met'})" \
        if kind == "PostgreSQL" else ""
    print(f"{kind}: commit -> handler start ({how}), {len(latencies)} events: p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms{goal}")
    db.dispose(app)


def _store(app, numbers):
    delivery = Delivery(body=b"")
    with db.engine(app).connect() as conn:
        for n in numbers:
            delivery = Delivery(body=BODY % (n, n, n))
            store.record(conn, delivery, store.judge(delivery))
            if n % 1000 == 999:
                conn.commit()
        conn.commit()


def _wakeups(app, config, options):
    # The worker in a process of its own, so this one's inserts do not share its interpreter.
    context = multiprocessing.get_context("spawn")
    starts, ready = context.Queue(), context.Event()
    child = context.Process(target=_waiting_worker, args=(config, starts, ready))
    child.start()
    try:
        if not ready.wait(60):
            raise SystemExit("the waiting worker did not start")
        committed = {}
        first = 10 ** 9
        for n in range(first, first + options.wakeups):
            delivery = Delivery(body=BODY % (n, n, n))
            outcome = db.writer(app).record(delivery, store.judge(delivery))
            committed[outcome.id] = time.time()
            time.sleep(options.gap_ms / 1000)
        latencies = []
        while len(latencies) < len(committed):
            event_id, started = starts.get(timeout=60)
            if event_id in committed:
                latencies.append((started - committed[event_id]) * 1000)
        return latencies
    finally:
        child.terminate()
        child.join(30)


def _waiting_worker(config, starts, ready):
    app = create_app(config)
    registry = Registry()
    registry.add("NewFileUpload", lambda event: starts.put((event.id, time.time())), name="bench:timed")
    worker = Worker(app, registry)
    worker._listen()
    worker._sweep_all()
    while worker.run_once():  # the throughput run's events are settled already
        pass
    ready.set()
    worker.run(listen=False)  # listening already


def _thread_cost(calls=20000):
    handler = Handler("bench:noop", lambda event: None)
    started = time.perf_counter()
    for _ in range(calls):
        handler.func(None)
    direct = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(calls):
        run_handler(handler, None, 60)
    fresh = time.perf_counter() - started
    runner = Runner()
    started = time.perf_counter()
    for _ in range(calls):
        runner.call(handler, None, 60)
    kept = time.perf_counter() - started
    runner.close()
    return (fresh - direct) / calls * 1e6, (kept - direct) / calls * 1e6


def _backend_pid(worker):
    # The worker's own connection, kept across run(): its backend's CPU is the server's share.
    connection = worker._connect()
    with connection.begin():
        return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid):
    # utime + stime of a process on this host (the PostgreSQL backend), from /proc.
    if pid is None:
        return 0.0
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values, percent):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


if __name__ == "__main__":
    main()
