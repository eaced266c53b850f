"""CPU per callback in one process, without gunicorn or a network: the steadiest figure here.

    python -m bench.inprocess [--callbacks 4000] [--app receiver|floor]
    valgrind --tool=callgrind python -m bench.inprocess --callbacks 400     # instructions

Calls the WSGI app directly with the v3 NewFileUpload sample (a FileId of its own each time),
in bursts of 8 greenlets as gunicorn's gevent worker would run them, on a temporary SQLite
file. CPU time on a shared machine drifts by tens of percent through the day; callgrind's
instruction count does not (repeat runs agree within 0.2%), so compare two versions by
instructions: run each with --callbacks 0 and --callbacks N, and divide the difference by N.
"""
from gevent import monkey

monkey.patch_all()  # first, as the gevent worker does

import argparse  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from .ingest import _sample_path, _template  # noqa: E402

BURST = 8


def main(argv=None):
    """Run the callbacks and print CPU (user and system) per callback."""
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--callbacks", type=int, default=4000, help="callbacks measured (4000)")
    parser.add_argument("--warm-up", type=int, default=80, help="callbacks before measuring (80)")
    parser.add_argument("--app", choices=["receiver", "floor"], default="receiver")
    parser.add_argument("--sample", help="NewFileUpload body (default: the v3 sample)")
    options = parser.parse_args(argv)
    app = _app(options.app, tempfile.mkdtemp(prefix="vodr-inprocess-"))
    prefix, suffix = _template(_sample_path(options.sample)).split(b"__FILE_ID__")
    environ = EnvironBuilder(path="/callbacks/vod", method="POST", content_type="application/json",
                             headers={"User-Agent": "bench"}).get_environ()
    run = time.time_ns()

    def one(number):
        body = b"%s%d-%d%s" % (prefix, run, number, suffix)
        status = []
        answer = app(dict(environ, CONTENT_LENGTH=str(len(body)), **{"wsgi.input": io.BytesIO(body)}),
                     lambda code, _headers, _exc=None: status.append(code))
        b"".join(answer)
        if not status[0].startswith("200"):
            raise SystemExit(f"callback {number} answered {status[0]}")

    def burst(first, count):
        gevent.joinall([gevent.spawn(one, n) for n in range(first, first + count)], raise_error=True)

    for first in range(0, options.warm_up, BURST):
        burst(first, min(BURST, options.warm_up - first))
    before = resource.getrusage(resource.RUSAGE_SELF)
    for first in range(options.warm_up, options.warm_up + options.callbacks, BURST):
        burst(first, min(BURST, options.warm_up + options.callbacks - first))
    after = resource.getrusage(resource.RUSAGE_SELF)
    n = max(options.callbacks, 1)
    print(f"{options.app}: {options.callbacks} callbacks, CPU per callback "
          f"{1e6 * (after.ru_utime - before.ru_utime) / n:.0f} µs user + "
          f"{1e6 * (after.ru_stime - before.ru_stime) / n:.0f} µs system")


def _app(kind, folder):
    if kind == "floor":
        from .floor import app

        return app
    from receiver import create_app, db

    url = f"sqlite:///{folder}/bench.db"
    db.upgrade(url)
    app = create_app({"RECEIVER_DATABASE_URL": url, "RECEIVER_SPOOL_DIR": f"{folder}/spool",
                      "RECEIVER_SPOOL_DRAIN_INTERVAL": 0, "RECEIVER_LOG_FORMAT": "json"})
    # The log lines are written as served, to a file nobody reads.
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115
    return app


if __name__ == "__main__":
    main()
