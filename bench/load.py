"""Load generators for the benchmark: wrk when installed, else a Python one; same figures.

Each request posts the body template with `__FILE_ID__` replaced by a FileId unique to the run,
the generator thread and the request, so no request is deduplicated away.
"""
import asyncio
import json
import multiprocessing
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PLACEHOLDER = b"__FILE_ID__"
WRK_SCRIPT = Path(__file__).with_name("newfileupload.lua")


@dataclass
class Result:
    """What one run of the load generator measured."""

    acknowledged: int  # answered 2xx
    errors: int  # answered otherwise, or failed on the socket
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float = 0.0  # the server's CPU time per acknowledged request, when measured

    @property
    def rps(self):
        """Acknowledged requests per second."""
        return self.acknowledged / self.seconds


def name():
    """The load generator this machine will use."""
    return "wrk" if shutil.which("wrk") else "python"


def run(url, template, run_id, seconds, connections, threads):
    """Drive `url` for `seconds` at `connections` concurrent connections; returns a Result."""
    if name() == "wrk":
        return _wrk(url, template, run_id, seconds, connections, threads)
    return _python(url, template, run_id, seconds, connections, threads)


def _wrk(url, template, run_id, seconds, connections, threads):
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
               "-s", str(WRK_SCRIPT), url, "--", str(template), str(run_id)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return Result(figures["completed"] - figures["status_errors"],
                  figures["status_errors"] + figures["socket_errors"],
                  figures["seconds"], figures["p50_ms"], figures["p99_ms"])


def _python(url, template, run_id, seconds, connections, threads):
    # One process per generator thread: a single Python process could not keep up.
    host, port, path = _split(url)
    body = Path(template).read_bytes()
    jobs = [(host, port, path, body, f"{run_id}{t + 1:02d}", connections // threads + (t < connections % threads), seconds)
            for t in range(threads)]
    with multiprocessing.get_context("spawn").Pool(threads) as pool:
        outcomes = pool.starmap(_python_process, jobs)
    latencies = sorted(ms for ok, _errors, lat in outcomes for ms in lat)
    acknowledged = sum(ok for ok, _errors, _lat in outcomes)
    errors = sum(errors for _ok, errors, _lat in outcomes)
    return Result(acknowledged, errors, seconds, _percentile(latencies, 50),
                  _percentile(latencies, 99))


def _python_process(host, port, path, body, prefix, connections, seconds):
    return asyncio.run(_python_load(host, port, path, body, prefix, connections, seconds))


async def _python_load(host, port, path, body, prefix, connections, seconds):
    head, tail = body.split(PLACEHOLDER, 1)
    deadline = time.monotonic() + seconds
    counter, acknowledged, errors, latencies = 0, 0, 0, []

    async def connection():
        nonlocal counter, acknowledged, errors
        while time.monotonic() < deadline:
            counter += 1
            payload = head + f"{prefix}{counter:010d}".encode() + tail
            request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                       "Connection: close\r\n\r\n").encode() + payload
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                await writer.wait_closed()
            except (OSError, asyncio.TimeoutError):
                errors += 1
                continue
            if answer[9:10] == b"2":  # "HTTP/1.1 2xx"
                acknowledged += 1
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1

    await asyncio.gather(*(connection() for _ in range(connections)))
    return acknowledged, errors, latencies


def _split(url):
    rest = url.removeprefix("http://")
    address, _, path = rest.partition("/")
    host, _, port = address.partition(":")
    return host, int(port or 80), "/" + path


def _percentile(values, p):
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]
